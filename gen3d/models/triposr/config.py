"""``TripoSRConfig``: the architecture, read from / written to the reference ``config.yaml`` schema.

The reference file names classes (``*_cls``) and the DINO repo whose ``config.json`` shapes the
ViT. We implement exactly those classes and embed the DINO config, so nothing is fetched; an
``image_tokenizer`` section may also override ViT sizes by their HF names (used by the tiny preset).
"""

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from gen3d.models.triposr.backbone import Transformer1DConfig
from gen3d.models.triposr.decoder import NeRFMLPConfig
from gen3d.models.triposr.field import FieldConfig
from gen3d.models.triposr.image_tokenizer import ViTConfig
from gen3d.models.triposr.post_processor import TriplaneUpsampleConfig
from gen3d.models.triposr.tokenizer import TriplaneTokenizerConfig

DINO_REPO = "facebook/dino-vitb16"
#: The reference class each section must name; ours implements exactly these.
REFERENCE_CLASSES = {
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}
#: Reference options that only matter for training.
_IGNORED = {"image_tokenizer": {"pretrained_model_name_or_path", "enable_gradient_checkpointing"}}
_REF = re.compile(r"^\$\{([\w.]+)\}$")


@dataclass
class TripoSRConfig:
    """All TripoSR hyperparameters; ``official()`` matches stabilityai/TripoSR.

    Attributes:
        cond_image_size: side of the conditioning image in pixels.
        image_tokenizer / tokenizer / backbone / post_processor / decoder / renderer: per-part configs.
    """

    cond_image_size: int = 512
    image_tokenizer: ViTConfig = field(default_factory=ViTConfig)
    tokenizer: TriplaneTokenizerConfig = field(default_factory=TriplaneTokenizerConfig)
    backbone: Transformer1DConfig = field(default_factory=Transformer1DConfig)
    post_processor: TriplaneUpsampleConfig = field(default_factory=TriplaneUpsampleConfig)
    decoder: NeRFMLPConfig = field(default_factory=NeRFMLPConfig)
    renderer: FieldConfig = field(default_factory=FieldConfig)

    def __post_init__(self) -> None:
        checks = {
            "backbone.in_channels": (self.backbone.in_channels, self.tokenizer.num_channels),
            "backbone.cross_attention_dim": (self.backbone.cross_attention_dim, self.image_tokenizer.hidden_size),
            "post_processor.in_channels": (self.post_processor.in_channels, self.tokenizer.num_channels),
            "decoder.in_channels": (self.decoder.in_channels, 3 * self.post_processor.out_channels),
        }
        for name, (got, expected) in checks.items():
            if got != expected:
                raise ValueError(f"{name}: expected {expected} to match the neighbouring part, got {got}")
        if self.cond_image_size % self.image_tokenizer.patch_size:
            raise ValueError(
                f"cond_image_size: expected a multiple of the patch size {self.image_tokenizer.patch_size}, "
                f"got {self.cond_image_size}"
            )

    @classmethod
    def official(cls) -> "TripoSRConfig":
        """The released model: 549 tensors, 419,275,628 parameters."""
        return cls()

    @classmethod
    def tiny(cls) -> "TripoSRConfig":
        """Same classes and code path at toy sizes, for CPU tests."""
        return cls(
            cond_image_size=64,
            image_tokenizer=ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
            tokenizer=TriplaneTokenizerConfig(plane_size=8, num_channels=32),
            backbone=Transformer1DConfig(
                in_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=2, cross_attention_dim=32
            ),
            post_processor=TriplaneUpsampleConfig(in_channels=32, out_channels=8),
            decoder=NeRFMLPConfig(in_channels=24, n_neurons=16, n_hidden_layers=3),
        )

    @classmethod
    def from_reference_dict(cls, raw: dict[str, Any]) -> "TripoSRConfig":
        """Parse the reference ``config.yaml`` mapping (``${a.b}`` references resolved)."""
        raw = _resolve_refs(raw, raw)
        for key, expected in REFERENCE_CLASSES.items():
            if key in raw and raw[key] != expected:
                raise ValueError(f"{key}: expected {expected!r} (the only implementation), got {raw[key]!r}")
        vit_section = dict(raw.get("image_tokenizer") or {})
        source = vit_section.get("pretrained_model_name_or_path", DINO_REPO)
        if source != DINO_REPO:
            raise ValueError(f"image_tokenizer.pretrained_model_name_or_path: expected {DINO_REPO!r}, got {source!r}")
        parts = {}
        for name, part in (
            ("image_tokenizer", ViTConfig),
            ("tokenizer", TriplaneTokenizerConfig),
            ("backbone", Transformer1DConfig),
            ("post_processor", TriplaneUpsampleConfig),
            ("decoder", NeRFMLPConfig),
            ("renderer", FieldConfig),
        ):
            section = {k: v for k, v in (raw.get(name) or {}).items() if k not in _IGNORED.get(name, set())}
            known = {f.name for f in fields(part)}
            unknown = sorted(set(section) - known)
            if unknown:
                raise ValueError(f"{name}: unknown keys {unknown}; expected some of {sorted(known)}")
            parts[name] = part(**section)
        return cls(cond_image_size=int(raw.get("cond_image_size", 512)), **parts)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TripoSRConfig":
        """Read a reference-schema ``config.yaml``."""
        raw = yaml.safe_load(Path(path).read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a YAML mapping, got {type(raw).__name__}")
        return cls.from_reference_dict(raw)

    def to_reference_dict(self) -> dict[str, Any]:
        """The reference schema; ViT sizes are written only where they differ from DINO ViT-B/16."""
        vit = {k: v for k, v in asdict(self.image_tokenizer).items() if v != getattr(ViTConfig(), k)}
        out: dict[str, Any] = {"cond_image_size": self.cond_image_size}
        for name in ("image_tokenizer", "tokenizer", "backbone", "post_processor", "decoder", "renderer"):
            out[f"{name}_cls"] = REFERENCE_CLASSES[f"{name}_cls"]
            out[name] = {"pretrained_model_name_or_path": DINO_REPO, **vit} if name == "image_tokenizer" else asdict(getattr(self, name))
        return out


def _resolve_refs(node: Any, root: dict[str, Any]) -> Any:
    """Replace OmegaConf-style ``${a.b}`` string values by the referenced value."""
    if isinstance(node, dict):
        return {k: _resolve_refs(v, root) for k, v in node.items()}
    if isinstance(node, str) and (match := _REF.match(node)):
        value: Any = root
        for part in match.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                raise ValueError(f"config reference {node!r}: {match.group(1)!r} not found")
            value = value[part]
        return _resolve_refs(value, root)
    return node
