"""The toy LLM: a tiny Llama with a sentencepiece tokenizer, briefly pretrained on the toy world's text.

::

    python -m toyworld pretrain-llm --world DIR --out DIR [--config configs/llava/toy-llm.yaml]
        [KEY=VALUE ...]

An ``OUT`` made from the same world, texts and config is kept (``cached``); ``--force`` rebuilds it.

It stands in for Vicuna: a ``LlamaForCausalLM`` directory whose tokenizer is a sentencepiece BPE
``tokenizer.model`` (byte fallback, ``<unk> <s> </s>`` at ids 0/1/2, BOS added) -- the kind Vicuna and
Llama-2 ship -- saved together with the converted ``tokenizer.json`` so ``AutoTokenizer.from_pretrained(out)``
and ``AutoModelForCausalLM.from_pretrained(out)`` work. Next-token prediction on the captions and on
conversations that answer from a text description of the scene makes it a stand-in for an
instruction-tuned LLM: it knows the words, the answer forms and, after enough steps, how to answer from its
context (not the pictures). ``toyworld check-llm`` measures the last.

[IMPORTANT] transformers 5: ``LlamaTokenizer(vocab_file=...)`` silently gives a 3-token vocabulary; load the
model file from a directory with ``LlamaTokenizer.from_pretrained(dir)`` (needs protobuf >= 7).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genhancer.utils.cli import add_print_config_argument, entry_point, print_config_and_exit
from genhancer.utils.config import load_config
from genhancer.utils.errors import ConfigError
from genhancer.utils.fsio import atomic_directory, write_json
from genhancer.utils.logging import get_logger, progress
from genhancer.utils.provenance import FILENAME, read_provenance, write_provenance

log = get_logger("toyworld.llm")

# Words every LLaVA conversation format uses, so the tokenizer has pieces for them.
TEMPLATE_TEXT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: ASSISTANT: "
    "Answer the question using a single word or phrase."
)


@dataclass
class ToyLlmConfig:
    vocab_size: int = 640  # 256 byte pieces + merges
    hidden_size: int = 64
    intermediate_size: int = 176
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024
    steps: int = 1500  # next-token pretraining steps (0: random weights)
    batch_size: int = 16  # documents per step
    seq_len: int = 256  # tokens kept of each document (a description + three questions fit)
    learning_rate: float = 3e-3
    seed: int = 0
    max_texts: int = 100_000
    # Instances to train, seeds seed, seed + 1, ..., until one has every skill the toy LLaVA needs from its
    # LLM (toyworld.llm_check.NEEDED, judged on val descriptions): the skills form late and not in every
    # instance, and which instance gets them changes with the machine's floating-point arithmetic. The
    # first instance with the skills is kept, else the one with the fewest missing.
    attempts: int = 1
    drills_per_scene: int = 1  # option-letter drills (llava_data.lookup_drill) per train scene in the texts
    # Question types drilled with balanced answers (llava_data.balanced_drills), e.g. [size]: the toy LLM
    # otherwise answers the commonest size from a description (docs/llava.md, "Reading drills for size").
    balanced_drills: tuple[str, ...] = ()
    # Every this many steps, ask the check-llm questions of the first check_scenes val scenes and keep the
    # answers per question type (provenance extra.skill_curve, skill_curve.png): when each skill forms.
    # 0: only the final check.
    check_every: int = 0
    check_scenes: int = 100


def train_sentencepiece(texts: Sequence[str], out_dir: Path, vocab_size: int) -> Path:
    """Train a Llama-style sentencepiece BPE model and write ``out_dir/tokenizer.model``."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,
        num_threads=1,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    return path


def load_sp_tokenizer(directory: Path) -> Any:
    from transformers import LlamaTokenizer

    # add_bos_token as Vicuna's tokenizer_config has it; the template never writes BOS itself.
    return LlamaTokenizer.from_pretrained(str(directory), add_bos_token=True, add_eos_token=False)


def new_toy_llm(tokenizer: Any, cfg: ToyLlmConfig) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def document_batch(docs: Sequence[list[int]], pad_id: int, seq_len: int) -> tuple[Any, Any]:
    """Whole documents (cut at ``seq_len``), right-padded: ``(input_ids, labels)``, both (B, T); labels are
    -100 on padding."""
    import torch

    docs = [d[:seq_len] for d in docs]
    n = max(len(d) for d in docs)
    ids = torch.full((len(docs), n), pad_id, dtype=torch.long)
    labels = torch.full((len(docs), n), -100, dtype=torch.long)
    for k, d in enumerate(docs):
        ids[k, : len(d)] = labels[k, : len(d)] = torch.tensor(d)
    return ids, labels


def pretrain(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: ToyLlmConfig,
    check: Callable[[], dict[str, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """Next-token prediction on whole documents (``<s> text </s>``, a batch of ``batch_size`` at a time).

    Every example starts at its document's start, so a question is always seen with the description it
    is about: that is what teaches the model to answer from its context. With ``check`` (a
    :func:`toyworld.llm_check.check_text_qa` of the model) and ``cfg.check_every``, the accuracy per
    question type every ``check_every`` steps is returned as ``skill_curve``."""
    import torch

    if cfg.steps <= 0:
        return {}
    rng = random.Random(cfg.seed)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    docs = [[bos, *tokenizer.encode(t, add_special_tokens=False), eos] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / cfg.steps)
    )
    model.train()
    t0, loss_val, tokens, curve = time.perf_counter(), float("nan"), 0, []
    for step in progress(range(cfg.steps), desc="toy LLM pretraining"):
        if check is not None and cfg.check_every > 0 and step > 0 and step % cfg.check_every == 0:
            curve.append(skill_point(model, step, check))
        ids, labels = document_batch(rng.sample(docs, cfg.batch_size), eos, cfg.seq_len)
        out = model(
            input_ids=ids, attention_mask=(labels != -100).long(), labels=labels
        )  # shifts labels itself
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val, tokens = out.loss.item(), tokens + int((labels != -100).sum())
    model.eval()
    secs = time.perf_counter() - t0
    if check is not None and cfg.check_every > 0:
        curve.append(skill_point(model, cfg.steps, check))
    return {
        "final_loss": round(loss_val, 4),
        "seconds": round(secs, 1),  # the checks included
        "tokens_per_second": round(tokens / max(secs, 1e-9)),
        **({"skill_curve": curve} if curve else {}),
    }


def skill_point(model: Any, step: int, check: Callable[[], dict[str, dict[str, float]]]) -> dict[str, Any]:
    """``{"step", "<type>": accuracy, ...}`` of ``check()`` on the model in eval mode; training mode after."""
    model.eval()
    result = check()
    model.train()
    point = {"step": step, **{t: round(r["accuracy"], 3) for t, r in result.items()}}
    log.info("toy LLM step %d: %s", step, {t: point[t] for t in point if t != "step"})
    return point


def build_toy_llm(
    texts: Sequence[str],
    out: str | Path,
    cfg: ToyLlmConfig,
    parents: Sequence[Path] = (),
    extra: dict[str, Any] | None = None,
    check_world: Path | None = None,
    record_config: ToyLlmConfig | None = None,
) -> Path:
    """Train the tokenizer, build and pretrain the model, write the HF directory ``out``. With
    ``check_world``, the trained model's text-QA accuracy per question type (``toyworld.llm_check``) is
    logged and kept in the provenance (``extra.text_qa``). ``record_config`` is the config the provenance
    names (default ``cfg``): the requested one when ``cfg`` is one of its attempts."""
    out = Path(out)
    texts = list(texts)[: cfg.max_texts]
    with tempfile.TemporaryDirectory() as tmp:
        # The template words are repeated so they get whole pieces (short prompts, as in Vicuna's vocabulary).
        sp_path = train_sentencepiece([TEMPLATE_TEXT] * 200 + texts, Path(tmp), cfg.vocab_size)
        tokenizer = load_sp_tokenizer(Path(tmp))
        model = new_toy_llm(tokenizer, cfg)
        stats = pretrain(model, tokenizer, texts, cfg, skill_check(model, tokenizer, check_world, cfg))

        def provenance(d: Path) -> None:
            write_provenance(
                d,
                "toy-llm",
                config=record_config or cfg,
                parents=list(parents),
                extra={
                    "n_texts": len(texts),
                    "parameters": sum(p.numel() for p in model.parameters()),
                    **stats,
                    **(extra or {}),
                },
            )

        with atomic_directory(out) as d:  # written before the check, so a failing check loses no training
            model.save_pretrained(d, safe_serialization=True)
            tokenizer.save_pretrained(d)
            shutil.copy(sp_path, d / "tokenizer.model")  # the sentencepiece model itself, as Vicuna ships it
            provenance(d)
            if stats.get("skill_curve"):
                from toyworld.llm_check import plot_skill_curve

                plot_skill_curve(stats["skill_curve"], d / "skill_curve.png", f"toy LLM, seed {cfg.seed}")
    if check_world is not None:
        from toyworld.llm_check import check_text_qa, format_table, missing_skills

        stats["text_qa"] = check_text_qa(model, tokenizer, check_world)
        log.info("answers from a text description (toyworld check-llm):\n%s", format_table(stats["text_qa"]))
        for line in missing_skills(stats["text_qa"]):
            log.warning(
                "toy LLM (seed %d) lacks a skill: %s. Instances of one recipe differ: raise `attempts` or "
                "rebuild with another seed (override seed=N)",
                cfg.seed,
                line,
            )
        provenance(out)
    log.info(
        "toy LLM (%s parameters, vocab %d) written to %s %s",
        f"{sum(p.numel() for p in model.parameters()):,}",
        len(tokenizer),
        out,
        stats,
    )
    return out


def skill_check(
    model: Any, tokenizer: Any, world: Path | None, cfg: ToyLlmConfig
) -> Callable[[], Any] | None:
    """The check :func:`pretrain` runs every ``cfg.check_every`` steps (None: no world or no curve asked)."""
    if world is None or cfg.check_every <= 0:
        return None
    from toyworld.llm_check import check_text_qa

    return lambda: check_text_qa(model, tokenizer, world, cfg.check_scenes)


# Config keys with a lower bound, checked before any training: (key, least value, what it counts).
LIMITS = (
    ("attempts", 1, "instances of the toy LLM to try"),
    ("drills_per_scene", 0, "option-letter drills per train scene"),
    ("check_every", 0, "steps between skill checks; 0: only the final check"),
    ("check_scenes", 1, "val scenes each skill check asks about"),
)


def check_config(cfg: ToyLlmConfig) -> None:
    """ConfigError naming the key, before any training: a count under its bound (``LIMITS``) or a
    ``balanced_drills`` entry that is not a closed-set question type."""
    from toyworld.llava_data import QUESTION_TYPES, answer_set

    for key, least, what in LIMITS:
        if getattr(cfg, key) < least:
            raise ConfigError(f"{key} must be >= {least} ({what}), got {getattr(cfg, key)}")
    closed = [t for t in QUESTION_TYPES if answer_set(t)]
    wrong = [t for t in cfg.balanced_drills if t not in closed]
    if wrong:
        raise ConfigError(
            f"balanced_drills: {wrong} are not closed-set question types; choose from {', '.join(closed)}"
        )


def build_until_skilled(world: Path, out: Path, cfg: ToyLlmConfig, data_format: str) -> Path:
    """Train up to ``cfg.attempts`` instances (seeds ``cfg.seed``, ``cfg.seed + 1``, ...) until one has
    every skill :data:`toyworld.llm_check.NEEDED`; move the kept one to ``out`` (``ToyLlmConfig.attempts``).
    Its provenance names the requested config and, under ``extra``, the seed kept and every attempt's
    missing skills. A kill loses the attempts made so far, never ``out``'s previous content half-written."""
    from toyworld.llava_data import llm_texts
    from toyworld.llm_check import missing_skills

    check_config(cfg)
    tried: list[tuple[Path, int, list[str]]] = []
    for k in range(cfg.attempts):
        inst = dataclasses.replace(cfg, seed=cfg.seed + k)
        where = out.with_name(f".{out.name}.seed{inst.seed}")
        extra = {"data_format": data_format, "seed_kept": inst.seed}
        build_toy_llm(
            llm_texts(world, inst.seed, drills=cfg.drills_per_scene, balanced=cfg.balanced_drills),
            where,
            inst,
            [world],
            extra,
            check_world=world,
            record_config=cfg,
        )
        tried.append((where, inst.seed, missing_skills(read_provenance(where)["extra"]["text_qa"])))
        if not tried[-1][2]:
            break
    kept = min(tried, key=lambda t: len(t[2]))
    prov = read_provenance(kept[0])
    prov["extra"]["attempts"] = [{"seed": seed, "missing": missing} for _, seed, missing in tried]
    write_json(kept[0] / FILENAME, prov)
    shutil.rmtree(out, ignore_errors=True)
    kept[0].rename(out)
    for where, _, _ in tried:
        shutil.rmtree(where, ignore_errors=True)
    if len(tried) > 1 or kept[2]:
        log.info("toy LLM: kept seed %d of %s", kept[1], [seed for _, seed, _ in tried])
    return out


def is_cached(out: Path, world: Path, cfg: ToyLlmConfig, data_format: str) -> bool:
    """Whether ``out`` is a toy LLM made from ``world`` with ``cfg`` by this version of the text writer."""
    from genhancer.utils.config import config_hash

    prov = read_provenance(out) if (out / "config.json").is_file() else None
    if not prov:
        return False
    parents = [p.get("path") for p in prov.get("parents", [])]
    return (
        prov.get("kind") == "toy-llm"
        and prov.get("config_hash") == config_hash(cfg)
        and parents == [str(world.resolve())]
        and (prov.get("extra") or {}).get("data_format") == data_format
    )


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    from toyworld.llava_data import LLM_TEXT_FORMAT

    parser = argparse.ArgumentParser(
        prog="python -m toyworld pretrain-llm", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--world", type=Path, help="toy world directory (its train captions)")
    parser.add_argument("--out", type=Path, help="HF causal-LM directory to write")
    add_print_config_argument(parser)
    parser.add_argument("--config", type=Path, help="YAML with ToyLlmConfig keys")
    parser.add_argument("--force", action="store_true", help="rebuild even when OUT is up to date")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. steps=0 hidden_size=64")
    args = parser.parse_args(argv)
    cfg = load_config(ToyLlmConfig, args.config, args.overrides)
    if args.print_config:
        print_config_and_exit(cfg)
    if args.world is None or args.out is None:
        parser.error("the following arguments are required: --world, --out")
    if not args.force and is_cached(args.out, args.world, cfg, LLM_TEXT_FORMAT):
        print(f"cached: {args.out} (same world, texts and config; --force rebuilds)")
        return 0
    build_until_skilled(args.world, args.out, cfg, LLM_TEXT_FORMAT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
