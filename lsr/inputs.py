"""One input type for every encoder: text, an image, or both, plus an optional instruction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import InputError

MODALITIES = ("text", "image", "image,text")


@dataclass(frozen=True)
class Input:
    """A query or document. ``image`` is a path, a PIL image or a ``[3, H, W]`` tensor."""

    text: str | None = None
    image: Any = None
    instruction: str | None = None

    def __post_init__(self):
        if self.text is not None and not isinstance(self.text, str):
            raise InputError(f"Input.text must be a string, got {type(self.text).__name__}")
        if self.instruction is not None and not isinstance(self.instruction, str):
            raise InputError(f"Input.instruction must be a string, got {type(self.instruction).__name__}")
        if not self.has_text and self.image is None:
            raise InputError("an Input needs text, an image, or both")

    @property
    def has_text(self) -> bool:
        return bool(self.text and self.text.strip())

    @property
    def modality(self) -> str:
        """``"text"``, ``"image"`` or ``"image,text"`` (M-BEIR's spelling)."""
        if self.image is not None and self.has_text:
            return "image,text"
        return "image" if self.image is not None else "text"

    def text_with_instruction(self) -> str:
        """The text with the task instruction prepended (M-BEIR style); empty string without text."""
        text = self.text.strip() if self.has_text else ""
        if self.instruction and self.instruction.strip():
            return f"{self.instruction.strip()} {text}".strip()
        return text


def as_inputs(items: Sequence[Any]) -> list[Input]:
    """Accept ``Input`` objects or plain strings (text inputs)."""
    if isinstance(items, (str, Input)):
        raise InputError("expected a list of inputs, got a single one (wrap it in a list)")
    out = []
    for i, it in enumerate(items):
        if isinstance(it, Input):
            out.append(it)
        elif isinstance(it, str):
            out.append(Input(text=it))
        else:
            raise InputError(f"input #{i} is {type(it).__name__}; pass a string or lsr.inputs.Input")
    return out


def without_images(items: Sequence[Any]) -> list[Input | str]:
    """``items`` as a text-only model takes them: every input without its image.

    An input with text keeps its text and instruction; one without text (an
    image alone) becomes its instruction alone as a string, or ``""`` when it
    has none (an empty vector for a sparse encoder). Strings stay as they are.
    """
    out: list[Input | str] = []
    for x in items:
        if not isinstance(x, Input) or x.image is None:
            out.append(x)
        elif x.has_text:
            out.append(Input(text=x.text, instruction=x.instruction))
        else:
            out.append(x.text_with_instruction())
    return out


def load_image(image: Any, max_pixels: int = 16_000_000):
    """A PIL RGB image from a path, a PIL image or a ``[3, H, W]`` / ``[H, W, 3]`` tensor or array.

    Grayscale, palette and RGBA images are converted to RGB. Files that are
    missing, unreadable or larger than ``max_pixels`` raise an error naming
    the file.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image {path}: file not found")
        try:
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise InputError(f"image {path}: {im.width}x{im.height} pixels exceeds the limit of "
                                     f"{max_pixels}; resize it first")
                im.load()
                return im.convert("RGB")
        except InputError:
            raise
        except UnidentifiedImageError:
            raise InputError(f"image {path}: not a readable image file") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"image {path}: corrupt or truncated ({e})") from None
        except Image.DecompressionBombError as e:
            raise InputError(f"image {path}: too large ({e})") from None
    if hasattr(image, "detach") or hasattr(image, "__array__"):
        import numpy as np

        arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise InputError(f"image tensor of shape {tuple(image.shape)} is not [3,H,W] or [H,W,3]")
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8) if arr.max() <= 1.0 else arr.astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        return Image.fromarray(arr[..., :3], "RGB")
    raise InputError(f"cannot use {type(image).__name__} as an image; pass a path, PIL image or tensor")


def text_only(encoder) -> bool:
    """Whether ``encoder`` takes text only (SPLADE, a wrapped sentence embedder). Such a model is given the
    inputs without their images (:func:`lsr.inputs.without_images`): an image-only candidate gets an empty
    vector (it is reported and not indexed) and an image-only query is its instruction alone."""
    return getattr(encoder, "takes_images", True) is False
