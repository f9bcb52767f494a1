"""Wrong arguments to create_model, the instance encoding and run_demo: clear errors, early.

Each case failed before with a raw torch/scipy/numpy error, or was accepted and gave a
wrong result (a typo in a model keyword silently ignored by smp; float or negative ids
encoded; NaN maps decoded as "no object"; a dict of decode parameters replaced by the
defaults).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import ConfigError, DataError
from geoseg.instances import DecodeParams, EncodeParams, decode, encode
from geoseg.models.registry import create_model

BAD_MODELS = {
    "no bands": (dict(in_channels=0), r"in_channels must be 1 to 1024 \(bands\), got 0"),
    "negative bands": (dict(in_channels=-1), r"in_channels must be 1 to 1024"),
    "bands as text": (dict(in_channels="3"), r"in_channels: expected a whole number"),
    "a million bands": (dict(in_channels=10**6), r"in_channels must be 1 to 1024"),
    "no classes": (dict(num_classes=0), r"num_classes must be 1 to 65535, got 0"),
    "too many classes": (dict(num_classes=10**7), r"num_classes must be 1 to 65535"),
    "encoder None": (dict(encoder=None), r"encoder: expected a non-empty name"),
    "typo in a keyword": (
        dict(decoder_chanels=(8, 8, 8, 8, 8)),
        r"'decoder_chanels' is not an option of 'unet' .*did you mean 'decoder_channels'",
    ),
    "unknown keyword": (dict(foo=1), r"'foo' is not an option of 'unet'.*smp would ignore it"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_create_model_refuses(case):
    kw, message = BAD_MODELS[case]
    args = dict(in_channels=3, num_classes=2) | kw
    with pytest.raises(ConfigError, match=message):
        create_model("unet", **args)


def test_create_model_keywords_smp_honours_still_build():
    m = create_model("unet", in_channels=4, num_classes=3, encoder_depth=3,
                     decoder_channels=(8, 8, 8))  # fmt: skip
    assert m.segmentation_head[0].out_channels == 3
    assert m.encoder.conv1.in_channels == 4
    assert [b.conv1[0].out_channels for b in m.decoder.blocks] == [8, 8, 8]


def _ids() -> np.ndarray:
    ids = np.zeros((16, 16), np.int64)
    ids[2:7, 2:7], ids[2:7, 7:12], ids[10:14, 3:9] = 1, 2, 3
    return ids


BAD_IDS = {
    "3-D": (np.zeros((2, 4, 4), int), r"2-D id array \(H, W\), got shape \(2, 4, 4\)"),
    "probabilities": (np.full((4, 4), 0.4), r"whole object ids, got float64 values with fractions"),
    "NaN": (np.full((4, 4), np.nan), r"whole object ids"),
    "negative": (-np.ones((4, 4), int), r"object ids are >= 0 .*got -1"),
    "a boolean mask": (np.ones((4, 4), bool), r"a mask of one class is not an instance map"),
    "text": (np.array([["a", "b"]]), r"integer object ids"),
}


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_encode_refuses(case):
    ids, message = BAD_IDS[case]
    with pytest.raises(DataError, match=message):
        encode(ids)


def test_encode_takes_whole_float_ids_like_integers():
    ids = _ids()
    assert np.array_equal(encode(ids.astype(np.float32)), encode(ids))


def test_params_must_be_their_dataclass():
    with pytest.raises(ConfigError, match=r"expected a EncodeParams or None, got dict"):
        encode(_ids(), params={"boundary_px": 2})
    with pytest.raises(ConfigError, match=r"expected a DecodeParams or None, got dict"):
        decode(encode(_ids()).astype(np.float32), params={"grow_px": 0})
    with pytest.raises(ConfigError, match=r"boundary_px: expected a whole number"):
        EncodeParams(boundary_px="2")
    with pytest.raises(ConfigError, match=r"decode.footprint: expected a number"):
        DecodeParams(footprint="0.5")


BAD_MAPS = {
    "2-D": (np.zeros((8, 8)), r"\(3, H, W\) array .*got shape \(8, 8\)"),
    "two maps": (np.zeros((2, 8, 8)), r"got shape \(2, 8, 8\)"),
    "text": ("maps", r"got shape \(\)"),
    "NaN": (np.full((3, 8, 8), np.nan), r"NaN or infinite"),
    "logits": (np.full((3, 8, 8), 3.0), r"probabilities in \[0, 1\].*from 3.0 to 3.0"),
}


@pytest.mark.parametrize("case", list(BAD_MAPS))
def test_decode_refuses(case):
    maps, message = BAD_MAPS[case]
    with pytest.raises(DataError, match=message):
        decode(maps)


def test_decode_refuses_a_mask_of_another_shape():
    with pytest.raises(DataError, match=r"valid must be an \(16, 16\) mask .*got \(4, 4\)"):
        decode(encode(_ids()).astype(np.float32), valid=np.ones((4, 4), bool))


def test_encoded_ids_decode_back():
    ids = _ids()
    maps = encode(ids).astype(np.float32)
    out = decode(maps, DecodeParams(grow_px=2, min_seed_px=1))
    for k in (1, 2, 3):  # each object is one decoded id covering its footprint
        got = np.unique(out[ids == k])
        assert len(got) == 1 and got[0] > 0
    assert len(np.unique(out[ids > 0])) == 3 and not out[ids == 0].any()


BAD_DEMO = {
    "workers 0": (dict(workers=0), r"workers must be 1 to 4096, got 0"),
    "workers as text": (dict(workers="2"), r"workers: expected a whole number"),
    "progress as text": (dict(progress="no"), r"progress: expected True or False"),
    "stream as a path": (dict(stream="log.txt"), r"stream: expected a text stream with \.write"),
}


@pytest.mark.parametrize("case", list(BAD_DEMO))
def test_run_demo_checks_its_options_before_making_any_output(case, tmp_path):
    from geoseg.demo import run_demo

    kw, message = BAD_DEMO[case]
    with pytest.raises(ConfigError, match=message):
        run_demo(tmp_path / "demo", **kw)
    assert not (tmp_path / "demo").exists()  # failed before (AttributeError) or after step 2


def test_a_checkpoint_with_integer_weights_is_refused(tmp_path):
    """torch copied int32 values into the float weights silently: a wrong map, exit 0."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from geoseg.errors import CheckpointError
    from geoseg.models import load_model

    shipped = Path(__file__).parents[1] / "models" / "nc_landcover.safetensors"
    state = load_file(str(shipped))
    with safe_open(str(shipped), framework="pt") as f:
        meta = f.metadata()
    key = "decoder.blocks.0.conv1.0.weight"
    save_file({**state, key: state[key].to(torch.int32)}, str(tmp_path / "i.safetensors"),
              metadata=meta)  # fmt: skip
    message = r"integer tensors where the model has float weights \(\['decoder\.blocks\.0\."
    with pytest.raises(CheckpointError, match=message + r"conv1\.0\.weight'\], torch\.int32\)"):
        load_model(tmp_path / "i.safetensors")
    # half-precision weights are weights: loaded (as float32, the model's type)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
              str(tmp_path / "h.safetensors"), metadata=meta)  # fmt: skip
    model, _ = load_model(tmp_path / "h.safetensors")
    assert next(model.parameters()).dtype == torch.float32
