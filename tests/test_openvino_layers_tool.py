"""tools/measure_openvino_layers.py: the per-layer OpenVINO profile of fp32 against int8 (slow: it
exports and quantises a small D0)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("openvino", reason="openvino is an optional extra: pip install effdet[export]")
pytest.importorskip("nncf", reason="nncf is an optional extra: pip install effdet[export]")

import measure_openvino_layers as tool  # noqa: E402  (tools/ is on pytest's path)


def test_kind_of_sorts_layers() -> None:
    depthwise = {"dw1"}
    assert tool.kind_of("dw1", "GroupConvolution", "jit_avx2_I8", depthwise) == "depthwise conv"
    assert tool.kind_of("heads", "GroupConvolution", "brgconv_avx2_1x1_f32", depthwise) == "other conv"
    assert tool.kind_of("x", "GroupConvolution", "brgconv_avx512_dw_i8", depthwise) == "depthwise conv"
    assert tool.kind_of("x", "Convolution", "brgconv_avx512_1x1_f32", depthwise) == "other conv"
    assert tool.kind_of("x", "FakeQuantize", "jit_avx2_i8", depthwise) == "quantise / reorder"
    assert tool.kind_of("x", "Multiply", "jit_avx2_f32", depthwise) == "element-wise"
    assert tool.kind_of("x", "Interpolate", "jit_avx2_f32", depthwise) == "pooling / resize"
    assert tool.kind_of("x", "FullyConnected", "brgemm_avx2_f32", depthwise) == "other"


@pytest.mark.slow  # ~40 s on 2 CPU cores: two exports (one quantised) and the timed runs
def test_profiles_fp32_and_int8_layer_by_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "layers.json"
    assert tool.main(["--image-size", "128", "--runs", "2", "--threads", "1", "--json", str(out)]) == 0
    # without --work the IR files went to a temporary folder of this process, removed at the end
    assert not list(Path(tempfile.gettempdir()).glob(f"effdet-ov-layers-{os.getpid()}-*"))
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"fp32", "int8"}
    for precision, result in report["results"].items():
        assert result["median_ms"] > 0 and result["layers_ms"] > 0
        assert sum(result["by_kind_ms"].values()) == pytest.approx(result["layers_ms"], rel=1e-9)
        assert result["by_kind_ms"]["depthwise conv"] > 0 and result["by_kind_ms"]["other conv"] > 0
        assert result["kernels"] and all(k["layers"] >= 1 for k in result["kernels"])
    assert report["int8_over_fp32"] == pytest.approx(report["results"]["int8"]["median_ms"]
                                                     / report["results"]["fp32"]["median_ms"])
    printed = capsys.readouterr().out
    assert "int8 / fp32:" in printed and "depthwise conv" in printed
