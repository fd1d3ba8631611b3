"""Safe loading: model weights from safetensors only (a pickle-only directory is refused with a conversion
one-liner that works), nothing unpickled anywhere in the libraries, and ``trust_remote_code`` never from a
config file. The source checks use ``ast`` and are shown to fail on a bad snippet."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import torch

from genhancer.utils.config import ConfigError, load_config
from genhancer.utils.errors import ModelDirError
from genhancer.utils.weights import require_safetensors
from tests.pickled import pickle_only_copy, run_conversion

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("genhancer", "llava_integration", "eval", "toyworld")
# from_pretrained receivers that load no weights, or only through the checked loaders below them
METADATA = re.compile(r"(Tokenizer|Processor|Config)$")
COMPOSITES = {"GenHancerModel", "family"}
UNPICKLERS = {"torch.load", "pickle.load", "pickle.loads", "joblib.load", "dill.load", "cloudpickle.load"}
UNSAFE_FLAGS = {"weights_only": "False", "allow_pickle": "True"}  # torch / numpy switches that unpickle


def _functions(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    """node -> the innermost function (or module) that holds it."""
    owner: dict[ast.AST, ast.AST] = {}

    def visit(node: ast.AST, scope: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            owner[child] = scope
            visit(child, child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope)

    visit(tree, tree)
    return owner


def unsafe_loads(source: str, name: str = "<snippet>") -> list[str]:
    """Every weights ``from_pretrained`` without ``use_safetensors=True`` (a PeftModel needs a
    ``require_safetensors`` call in the same function instead), and every unpickling call."""
    tree = ast.parse(source)
    owner = _functions(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called = ast.unparse(node.func)
        flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if called in UNPICKLERS or any(flags.get(k) == v for k, v in UNSAFE_FLAGS.items()):
            found.append(f"{name}:{node.lineno}: {called} unpickles")
        if not (isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained"):
            continue
        receiver = ast.unparse(node.func.value)
        if METADATA.search(receiver) or receiver in COMPOSITES:
            continue
        if receiver == "PeftModel":
            scope = ast.unparse(owner[node])
            if "require_safetensors(" not in scope:
                found.append(f"{name}:{node.lineno}: PeftModel.from_pretrained without require_safetensors")
            continue
        if flags.get("use_safetensors") != "True":
            found.append(f"{name}:{node.lineno}: {receiver}.from_pretrained without use_safetensors=True")
    return found


def test_every_weights_load_is_safetensors_only_and_nothing_is_unpickled():
    files = [p for pkg in LIBRARIES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50
    problems = [x for p in files for x in unsafe_loads(p.read_text(), str(p.relative_to(ROOT)))]
    assert problems == []


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("m = CLIPModel.from_pretrained(d)", "CLIPModel.from_pretrained without use_safetensors=True"),
        ("m = cls.from_pretrained(d, use_safetensors=False)", "cls.from_pretrained without"),
        ("def f(b, d):\n    return PeftModel.from_pretrained(b, d)", "without require_safetensors"),
        ("state = torch.load(path, weights_only=False)", "torch.load unpickles"),
        ("x = np.load(p, allow_pickle=True)", "np.load unpickles"),
    ],
)
def test_the_source_check_can_fail(snippet, expected):
    assert any(expected in p for p in unsafe_loads(snippet))


def test_the_source_check_passes_safe_loads():
    ok = (
        "def f(b, d):\n    require_safetensors(d)\n    return PeftModel.from_pretrained(b, d)\n"
        "t = AutoTokenizer.from_pretrained(d)\nm = M.from_pretrained(d, use_safetensors=True)\n"
    )
    assert unsafe_loads(ok) == []


# ------------------------------------------------------------------------------------ pickle-only dirs
@pytest.fixture(scope="module")
def pickled_clip(tiny_clip_dir, tmp_path_factory) -> Path:
    return pickle_only_copy(Path(tiny_clip_dir), tmp_path_factory.mktemp("pickled") / "clip")


def test_pickle_only_encoder_is_refused_with_a_conversion_that_works(pickled_clip, tiny_clip_dir, tmp_path):
    from genhancer.encoders import ENCODERS

    d = tmp_path / "clip"
    shutil.copytree(pickled_clip, d)
    with pytest.raises(ModelDirError) as e:
        ENCODERS["clip"].load_full_model(str(d))
    msg = str(e.value)
    assert f"{d} holds only pickled weights (pytorch_model.bin" in msg and "arbitrary code" in msg
    assert not list(d.glob("*.safetensors"))  # refused before anything was written or read
    run_conversion(msg)
    converted = ENCODERS["clip"].load_full_model(str(d))
    original = ENCODERS["clip"].load_full_model(str(tiny_clip_dir))
    assert all(
        torch.equal(a, b) for a, b in zip(converted.state_dict().values(), original.state_dict().values())
    )


def test_eval_encoder_loader_refuses_a_pickle_only_dir(pickled_clip):
    from eval.encoders import load_encoder

    with pytest.raises(ModelDirError, match="only pickled weights .*CLIPModel.from_pretrained"):
        load_encoder(pickled_clip)


def test_require_safetensors_rules(tmp_path):
    (tmp_path / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(ModelDirError, match=r"save_file\(torch.load\("):
        require_safetensors(tmp_path, loader="peft", what="LoRA adapter")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    require_safetensors(tmp_path, loader="peft")  # safetensors present: the .bin is simply not read
    require_safetensors(tmp_path / "missing")  # not a local directory: left to the library (hub ids)
    empty = tmp_path / "empty"
    empty.mkdir()
    require_safetensors(empty)  # no weights at all: the loader's own message names what is missing


# ------------------------------------------------------------------------------------ trust_remote_code
@pytest.mark.parametrize("where", ["file", "override"])
def test_trust_remote_code_cannot_come_from_a_config(tmp_path, where):
    from llava_integration.config import LlavaTrainConfig

    path, overrides = None, []
    if where == "file":
        path = tmp_path / "run.yaml"
        path.write_text("model:\n  llm: some/llm\n  trust_remote_code: true\n")
    else:
        overrides = ["model.trust_remote_code=true"]
    with pytest.raises(ConfigError) as e:
        load_config(LlavaTrainConfig, path, overrides)
    msg = str(e.value)
    assert "'model.trust_remote_code' is not allowed in a config file" in msg and "--trust-remote-code" in msg
    if path is not None:
        assert str(path) in msg


def test_genhancer_configs_refuse_it_too(tmp_path):
    from genhancer.config import GenHancerConfig

    with pytest.raises(ConfigError, match="'encoder.trust_remote_code' is not allowed"):
        load_config(GenHancerConfig, None, ["encoder.trust_remote_code=false"])


def test_build_takes_trust_remote_code_from_its_flag_only(monkeypatch, tmp_path):
    import llava_integration.build as build_mod

    seen = []
    monkeypatch.setattr(
        build_mod, "build", lambda *a, trust_remote_code=False, **k: seen.append(trust_remote_code)
    )
    argv = ["--encoder", "e", "--llm", "l", "--out", str(tmp_path / "o")]
    assert build_mod.main(argv) == 0 and build_mod.main([*argv, "--trust-remote-code"]) == 0
    assert seen == [False, True]


def test_no_library_default_turns_remote_code_on():
    """Every ``trust_remote_code=`` in the libraries is a variable or False, never a literal True."""
    literal_true = []
    for pkg in LIBRARIES:
        for p in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                    if isinstance(node.value, ast.Constant) and node.value.value is True:
                        literal_true.append(f"{p}:{node.value.lineno}")
    assert literal_true == []


def test_adapter_conversion_works_and_loads_tensors_only(tmp_path):
    """The adapter one-liner converts a pickled state dict, and with weights_only=True it cannot run code."""
    from safetensors.torch import load_file

    state = {"base_model.q_proj.lora_A.weight": torch.randn(4, 8)}
    torch.save(state, tmp_path / "adapter_model.bin")
    with pytest.raises(ModelDirError) as err:
        require_safetensors(tmp_path, loader="peft", what="LoRA adapter")
    assert "weights_only=True" in str(err.value)
    run_conversion(str(err.value))
    got = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
