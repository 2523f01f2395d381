import pytest
import torch
from safetensors.torch import save_file

from taskarith_core.errors import InputError
from taskarith_core.io import atomic_path, load_state_dict, save_state_dict
from taskarith_core.safetensors_reader import SafetensorsFile

STATE = {
    "a": torch.randn(3, 4),
    "b": torch.arange(5, dtype=torch.int64),
    "c": torch.randn(2).to(torch.bfloat16),
    "empty": torch.zeros(0, 3),
}


def test_reader_matches_safetensors(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file(STATE, path, metadata={"tasks": "[1]"})
    with SafetensorsFile(path) as f:
        assert sorted(f.keys()) == sorted(STATE)
        assert f.metadata() == {"tasks": "[1]"}
        assert f.shape("a") == (3, 4) and f.dtype("c") == "BF16"
        for key, value in STATE.items():
            assert torch.equal(f.get_tensor(key), value)


def test_reader_reports_truncation_and_garbage(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file(STATE, path)
    (tmp_path / "t.safetensors").write_bytes(path.read_bytes()[:-8])
    with pytest.raises(InputError, match="truncated"):
        SafetensorsFile(tmp_path / "t.safetensors")
    (tmp_path / "g.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(InputError, match="not JSON"):
        SafetensorsFile(tmp_path / "g.safetensors")
    (tmp_path / "s.safetensors").write_bytes(b"abc")
    with pytest.raises(InputError, match="not a valid"):
        SafetensorsFile(tmp_path / "s.safetensors")
    with pytest.raises(InputError, match="not found"):
        SafetensorsFile(tmp_path / "none.safetensors")


def test_atomic_save_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    save_state_dict({"a": torch.ones(2)}, out)
    assert torch.equal(load_state_dict(out)["a"], torch.ones(2))


def test_pickle_needs_trust(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "m.pt")
    with pytest.raises(InputError, match="--trust-pickle"):
        load_state_dict(tmp_path / "m.pt")
    assert torch.equal(load_state_dict(tmp_path / "m.pt", trust_pickle=True)["a"], torch.ones(2))


def test_writer_round_trips_through_safetensors(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "w.safetensors"
    save_state_dict(STATE, path, metadata={"method": "sta"})
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"method": "sta"}
        for key, value in STATE.items():
            assert torch.equal(handle.get_tensor(key), value)


def test_torchscript_archive_is_refused_even_when_trusted(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "model.pt"))
    with pytest.raises(InputError, match="TorchScript"):
        load_state_dict(tmp_path / "model.pt", trust_pickle=True)
