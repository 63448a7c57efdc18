"""Checkpoints: self-describing round trip, safety, mismatch errors, fine-tuning, torchvision weights."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from effdet import create_model
from effdet.factory import load_model
from effdet.fileio import WriteError
from effdet.weights.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from effdet.weights.reference import convert_reference_state_dict

TINY = dict(image_size=128, fpn_channels=16, fpn_cells=1, head_repeats=1)


def _tiny(num_classes: int = 3, **kw):
    return create_model("efficientdet_d0", num_classes=num_classes, **(TINY | kw))


def test_round_trip_rebuilds_exact_model(tmp_path) -> None:
    model = _tiny().eval()
    path = save_checkpoint(tmp_path / "m.pt", model, class_names=["a", "b", "c"], category_ids=[1, 5, 9])
    loaded, info = load_model(path)
    assert info["class_names"] == ["a", "b", "c"] and info["category_ids"] == [1, 5, 9]
    assert info["config"] == model.config
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.equal(p, q) for p, q in zip(a[0] + a[1], b[0] + b[1]))
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "effdet-checkpoint"


def test_checkpoint_for_other_class_count_errors_clearly(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _tiny(5))
    with pytest.raises(CheckpointError, match="5 classes"):
        from effdet.weights.checkpoint import load_weights

        load_weights(_tiny(3), read_checkpoint(path)["model"], source=str(path))


def test_checkpoint_for_other_model_errors(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _tiny())
    with pytest.raises(CheckpointError, match="does not fit") as e:
        load_model(path, model="efficientdet_d1", image_size=128)
    assert "checkpoint" in str(e.value) and "model" in str(e.value)


def test_fine_tuning_reinitialises_only_class_predictor(tmp_path, capsys) -> None:
    model = _tiny(5)
    path = save_checkpoint(tmp_path / "m.pt", model)
    tuned, info = load_model(path, num_classes=2)
    assert "re-initialised" in capsys.readouterr().out
    assert tuned.config.num_classes == 2 and info["class_names"] is None
    for k, v in tuned.state_dict().items():
        if not k.startswith("class_net.predict."):
            assert torch.equal(v, model.state_dict()[k]), k


def test_refuses_pickled_objects_and_bad_files(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="refused for safety"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    trunc = tmp_path / "trunc.pt"
    save_checkpoint(tmp_path / "ok.pt", _tiny())
    trunc.write_bytes((tmp_path / "ok.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_model(trunc)


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _tiny())
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(WriteError, match=r"could not write file .*m\.pt: the disk is full\. Free disk space"):
        save_checkpoint(path, _tiny())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_full_disk_as_torch_reports_it_is_one_clear_error(tmp_path, monkeypatch) -> None:
    """torch.save turns ENOSPC into RuntimeError('[enforce fail at inline_container.cc...] file write failed')."""
    path = save_checkpoint(tmp_path / "m.pt", _tiny())
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0\nfile write failed")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(WriteError, match=r"m\.pt: the write failed \(is the disk full\?\)"):
        save_checkpoint(path, _tiny())
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_torchvision_backbone_weights(tmp_path) -> None:
    tv = torchvision.models.efficientnet_b0(weights=None).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = create_model("efficientdet_d0", num_classes=3, image_size=128, padding="symmetric",
                         backbone_weights=tmp_path / "tv.pth").eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ours = model.backbone(x)
        feats, y = [], x
        for i, stage in enumerate(tv.features[:8]):
            y = stage(y)
            if i in (3, 5, 7):
                feats.append(y)
    for a, b in zip(ours, feats):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    torch.save(torchvision.models.efficientnet_b1(weights=None).state_dict(), tmp_path / "b1.pth")
    with pytest.raises(CheckpointError, match="do not fit efficientnet_b0"):
        create_model("efficientdet_d0", image_size=128, backbone_weights=tmp_path / "b1.pth")
    with pytest.raises(CheckpointError, match="neither a file, none, timm:NAME, pip:PACKAGE nor a torchvision weights name"):
        create_model("efficientdet_d0", image_size=128, backbone_weights="NoSuchWeights.X")


def test_reference_key_conversion_is_injective_onto_our_keys() -> None:
    """Every reference key of each kind maps to one of our keys with the same shape, and no two
    reference keys map to the same key (injective). That the whole map is onto, every key of
    ours met exactly once, is checked on full reference models by the strict load of
    ``tests/test_reference_parity.py``."""
    model = create_model("efficientdet_d0", image_size=128)
    ours = model.state_dict()
    # a minimal reference-style state dict for one block of each kind, head BN and the P6 resample
    ref = {
        "backbone.conv_stem.weight": torch.zeros(32, 3, 3, 3),
        "backbone.blocks.0.0.conv_dw.weight": torch.zeros(32, 1, 3, 3),
        "backbone.blocks.1.1.conv_pwl.weight": torch.zeros(24, 144, 1, 1),
        "backbone.blocks.1.1.se.conv_reduce.bias": torch.zeros(6),
        "fpn.resample.3.conv.conv.weight": torch.zeros(64, 320, 1, 1),
        "fpn.cell.0.fnode.1.combine.resample.2.conv.bn.running_var": torch.zeros(64),
        "fpn.cell.0.fnode.4.combine.resample.1.conv.conv.weight": torch.zeros(64, 112, 1, 1),
        "fpn.cell.2.fnode.7.after_combine.conv.conv_pw.bias": torch.zeros(64),
        "class_net.bn_rep.2.4.bn.weight": torch.zeros(64),
        "box_net.predict.conv_pw.bias": torch.arange(36.0),
    }
    conv = convert_reference_state_dict(ref)
    assert len(conv) == len(ref)  # no two reference keys collapsed onto one
    for k, v in conv.items():
        assert k in ours and ours[k].shape == v.shape, k
    assert "fpn.cells.0.nodes.4.resample.0.0.weight" in conv  # P4 is the first input of P4out
    assert "class_net.bns.4.2.weight" in conv
    # (ty, tx, th, tw) -> (dx, dy, dw, dh)
    assert conv["box_net.predict.conv_pw.bias"][:8].tolist() == [1, 0, 3, 2, 5, 4, 7, 6]
