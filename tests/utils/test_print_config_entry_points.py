"""--print-config of the genhancer entry points that read a run's config (export, sample)."""

from __future__ import annotations

import pytest
import yaml

from genhancer.config import load_genhancer_config
from genhancer.module import CONDITIONER_FILE, CONFIG_FILE, DENOISER_DIR
from genhancer.utils.config import dump_yaml, to_dict


@pytest.fixture
def stage_dir(tmp_path):
    """A directory that passes the stage-output check; only its config is real (nothing else is read)."""
    d = tmp_path / "run" / "final"
    cfg = load_genhancer_config(None, ["name=printed", "stage=stage2", "lora.r=4"])
    dump_yaml(cfg, d / CONFIG_FILE)
    (d / CONDITIONER_FILE).write_bytes(b"")
    (d / DENOISER_DIR).mkdir()
    (d / DENOISER_DIR / "config.json").write_text("{}")
    return d, cfg


@pytest.mark.parametrize("module,flag", [("genhancer.export", "--run"), ("genhancer.sample", "--stage-dir")])
def test_print_config_prints_the_runs_config(module, flag, stage_dir, capsys):
    import importlib

    main = importlib.import_module(module).main
    d, cfg = stage_dir
    assert main([flag, str(d.parent), "--print-config"]) == 0  # a run dir resolves to its final/
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == to_dict(cfg) and printed["train"]["run_dir"] == "runs/printed/stage2"


def test_without_print_config_the_outputs_stay_required(stage_dir):
    from genhancer.export import main as export_main
    from genhancer.sample import main as sample_main

    d, _ = stage_dir
    with pytest.raises(SystemExit) as e:
        export_main(["--run", str(d)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        sample_main(["--stage-dir", str(d), "--out", "x.png"])
    assert e.value.code == 2
