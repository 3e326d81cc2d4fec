"""Checkpoints are read without running code from them (landscape.checkpoints and the CLI).

A ``torch.save``d file is a pickle: ``torch.load(weights_only=False)`` runs whatever function
the file names. These tests plant such a payload (it writes a marker file) and prove it does
not run unless the user opts in with ``--allow-pickle`` / ``allow_pickle=True`` (and that it
*does* run then, so the marker check can fail). Safetensors state dicts and Hugging Face
``save_pretrained`` directories analyze end to end.
"""

import json
import sys

import pytest
import torch
from torch import nn

import landscape as ls
from landscape import checkpoints, cli

MODELS = """
import torch
from torch import nn


def mlp():
    return nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))


def batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g))
            for _ in range(2)]


def token_batches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padding, not scored
    labels = ids.masked_fill(mask == 0, -100)
    return [{"input_ids": ids[:2], "attention_mask": mask[:2], "labels": labels[:2]},
            {"input_ids": ids[2:], "attention_mask": mask[2:], "labels": labels[2:]}]
"""


class Payload:
    """Unpickling this object writes ``marker``: the stand-in for a malicious payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield tmp_path
    sys.modules.pop("mymodels", None)


def _mlp_state():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).state_dict()


def test_a_pickle_payload_in_a_checkpoint_does_not_run(project, capsys):
    marker = project / "payload_ran"
    torch.save({"state_dict": _mlp_state(), "extra": Payload(marker)}, project / "evil.pt")
    args = ["analyze", "--model", "mymodels:mlp", "--checkpoint", "evil.pt", "--data",
            "mymodels:batches", "--no-surfaces", "--no-learning-rates", "--no-progress"]  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "the payload ran"
    assert err.startswith("landscape analyze: error: ")
    assert "builtins.exec" in err  # what the file would have imported and called
    assert "--allow-pickle" in err and "It was not read" in err
    # The control: with the opt-in, torch.load does unpickle, and the payload runs.
    assert cli.main([*args, "--allow-pickle"]) == 0
    assert marker.read_text() == "ran"


def test_a_pickled_whole_model_needs_the_opt_in(project, capsys):
    import mymodels

    torch.save(mymodels.mlp(), project / "whole.pt")
    args = ["analyze", "--model", "whole.pt", "--data", "mymodels:batches", "--no-surfaces",
            "--no-learning-rates", "--no-progress"]  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "torch.nn.modules.container.Sequential" in err and "--allow-pickle" in err
    assert cli.main([*args, "--allow-pickle"]) == 0


def test_load_object_refuses_and_names_the_payload(tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save([Payload(marker)], tmp_path / "evil.pt")
    with pytest.raises(checkpoints.UnsafeCheckpointError, match=r"builtins\.exec"):
        checkpoints.load_object(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="no such file"):
        checkpoints.load_object(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="not a state_dict"):
        checkpoints.unwrap_state_dict({"epoch": 3, "note": "x"})


def test_a_safetensors_state_dict_analyzes_end_to_end(project, capsys):
    from safetensors.torch import save_file

    state = _mlp_state()
    save_file(state, str(project / "weights.safetensors"))
    code = cli.main(
        ["analyze", "--model", "mymodels:mlp", "--checkpoint", "weights.safetensors", "--data",
         "mymodels:batches", "--out", "run.h5", "--no-progress"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    import mymodels

    expected = mymodels.mlp()
    expected.load_state_dict(state)
    report = ls.load(project / "run.h5")
    assert report.loss.value == pytest.approx(ls.evaluate(expected, mymodels.batches())["value"])
    assert report.surface_2d is not None and report.learning_rate is not None
    # weights alone are no architecture
    assert cli.main(["analyze", "--model", "weights.safetensors", "--data", "digits"]) == 2
    assert "holds weights, not an architecture" in capsys.readouterr().err


def _tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def test_a_save_pretrained_directory_analyzes_end_to_end(project, capsys):
    model = _tiny_gpt2()
    model.save_pretrained(project / "gpt2dir")
    assert any(p.suffix == ".safetensors" for p in (project / "gpt2dir").iterdir())
    code = cli.main(
        ["analyze", "--model", "gpt2dir", "--data", "mymodels:token_batches", "--out",
         "run.h5", "--no-progress", "--no-learning-rates"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    import mymodels

    batches = mymodels.token_batches()
    # The truth is the model's own loss, weighted by scored tokens over the batches.
    with torch.no_grad():
        tokens = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
        own = sum(model(**b).loss * t for b, t in zip(batches, tokens)) / sum(tokens)
    report = ls.load(project / "run.h5")
    assert report.metadata["model"] == "GPT2LMHeadModel"
    assert report.loss.value == pytest.approx(float(own), rel=1e-6)


def test_code_in_a_model_directory_is_never_imported(tmp_path, capsys):
    directory = tmp_path / "custom"
    directory.mkdir()
    marker = tmp_path / "modeling_ran"
    (directory / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = {
        "architectures": ["EvilModel"],
        "model_type": "evil",
        "auto_map": {"AutoModel": "modeling_evil.EvilModel"},
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "model.safetensors").write_bytes(b"")
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="'EvilModel' is not part of transformers"):
        checkpoints.load_pretrained(directory)
    assert cli.main(["analyze", "--model", str(directory), "--data", "digits"]) == 2
    assert "is not part of transformers" in capsys.readouterr().err
    assert not marker.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["analyze", "--model", str(empty), "--data", "digits"]) == 2
    assert "without a config.json" in capsys.readouterr().err
