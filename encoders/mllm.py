"""E5-V style embeddings from a multimodal LLM (any LLaVA-family model).

The model reads a prompt that asks it to summarise the input in one word; the
embedding is the final hidden state (after the last norm) of the last
non-padding token, L2-normalised. Text, images and image+text pairs land in
one space because every prompt asks for the same thing: one word.

Prompts are data. A prompt is ``CONTENT[modality]`` followed by a newline and
an instruction; :data:`PROMPTS` holds the instruction per task and modality.
An :class:`~lsr.inputs.Input` with its own ``instruction`` replaces the
table's instruction. The whole prompt is then placed in a chat template from
:data:`CHAT_TEMPLATES` (``plain`` by default; ``llama3`` is the format of the
published E5-V checkpoint, which is built on LLaVA-NeXT with Llama 3).

Padding: position ids are computed from the attention mask, and the last
non-padding token is found from the mask, so left and right padding give the
same embeddings as encoding each input alone.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from lsr.progress import tqdm

from lsr.errors import EnvironmentProblem, InputError, first_line
from lsr.inputs import Input, as_inputs, load_image

from .hub import hub_error, hub_unavailable
from .registry import resolve
from .base import pick_device, pick_dtype

# What comes before the instruction, per modality. ``{image}`` becomes the processor's image token.
CONTENT: dict[str, str] = {
    "text": "{text}",
    "image": "{image}",
    "image,text": "{image}\n{text}",
}

# The instruction that follows the content, per task and modality.
PROMPTS: dict[str, dict[str, str]] = {
    "default": {
        "text": "Summary above sentence in one word:",
        "image": "Summary above image in one word:",
        "image,text": "Describe the above image and text in one word:",
    },
    # text queries looking for images, and images looking for captions
    "caption_to_image": {
        "text": "Summary the above caption in one word to help find a matching image:",
        "image": "Summary above image in one word:",
        "image,text": "Describe the above image and text in one word:",
    },
    "image_to_caption": {
        "text": "Summary above sentence in one word:",
        "image": "Summary above image in one word to help find a matching caption:",
        "image,text": "Describe the above image and text in one word:",
    },
    # passages for question answering
    "passage_retrieval": {
        "text": "Summary the above passage in one word to help answer a question:",
        "image": "Summary above image in one word:",
        "image,text": "Describe the above image and text in one word:",
    },
}

# How the prompt is wrapped for the language model; ``{prompt}`` is the assembled prompt.
CHAT_TEMPLATES: dict[str, str] = {
    "plain": "{prompt}",
    "llama3": ("<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n \n"),
}


def build_prompt(item: Input, task: str = "default", image_token: str = "<image>",
                 prompts: Mapping[str, Mapping[str, str]] = PROMPTS, chat_template: str = "{prompt}") -> str:
    """The full prompt for one input: content, newline, instruction, wrapped in ``chat_template``.

    The user's text is inserted verbatim (braces in it are not interpreted).
    """
    if task not in prompts:
        raise InputError(f"prompt task {task!r} is not one of {', '.join(sorted(prompts))}")
    modality = item.modality
    if modality not in prompts[task]:
        raise InputError(f"prompt task {task!r} has no prompt for {modality!r} inputs")
    text = item.text.strip() if item.has_text else ""
    if image_token and image_token in text:
        raise InputError(f"the input text contains the image token {image_token!r}; remove it from the text")
    instruction = item.instruction.strip() if item.instruction and item.instruction.strip() else prompts[task][modality]
    prompt = CONTENT[modality].format(image=image_token, text=text) + "\n" + instruction
    return chat_template.format(prompt=prompt)


class E5VEmbedder:
    """Last-token embeddings of a LLaVA-family model under one-word-summary prompts (E5-V style)."""

    kind = "mllm"
    normalized = True

    def __init__(
        self,
        model: str | None = None,
        *,
        task: str = "default",
        query_task: str | None = None,
        prompts: Mapping[str, Mapping[str, str]] = PROMPTS,
        chat_template: str = "plain",
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
        padding_side: str = "left",
        progress: bool = False,
        hf_model=None,
        processor=None,
        name: str | None = None,
    ):
        """Load ``model`` (alias, ``hf:ORG/NAME`` or a directory) with transformers' auto classes, or wrap
        ``hf_model`` + ``processor``. ``task`` picks the documents' prompts, ``query_task`` the queries'
        (default: the same). ``chat_template`` is a key of :data:`CHAT_TEMPLATES` or a string with ``{prompt}``.
        """
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        for t in (task, query_task or task):
            if t not in prompts:
                raise InputError(f"prompt task {t!r} is not one of {', '.join(sorted(prompts))}")
        template = CHAT_TEMPLATES.get(chat_template, chat_template)
        if "{prompt}" not in template:
            raise InputError(f"chat_template {chat_template!r} is neither one of {', '.join(CHAT_TEMPLATES)} "
                             "nor a string containing {prompt}")
        self.task, self.query_task = task, query_task or task
        self.prompts = {t: dict(m) for t, m in prompts.items()}
        self.chat_template = template
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.padding_side = padding_side
        self.progress = progress
        if hf_model is None:
            if not model:
                raise InputError("give a model name or hf_model + processor")
            hf_model, processor, self.source = _load(model, self.dtype)
        else:
            if processor is None:
                raise InputError("hf_model given without its processor")
            self.source = None
        self.name = name or model or type(hf_model).__name__
        self.model = hf_model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_token = getattr(processor, "image_token", None) or "<image>"
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.dim = int(text_config.hidden_size)
        params = inspect.signature(self.model.forward).parameters
        self._accepts = set(params)
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def settings(self) -> dict:
        return {"task": self.task, "query_task": self.query_task, "chat_template": self.chat_template,
                "prompts": {self.task: self.prompts[self.task], self.query_task: self.prompts[self.query_task]}}

    # ------------------------------------------------------------------ API
    def prompt(self, item: Input | str, task: str | None = None) -> str:
        """The prompt an input is encoded with."""
        item = as_inputs([item])[0]
        return build_prompt(item, task or self.task, self.image_token, self.prompts, self.chat_template)

    def encode_queries(self, inputs: Sequence[Any]) -> np.ndarray:
        return self.encode(inputs, self.query_task)

    def encode_documents(self, inputs: Sequence[Any]) -> np.ndarray:
        return self.encode(inputs, self.task)

    def encode(self, inputs: Sequence[Any], task: str | None = None, normalize: bool = True) -> np.ndarray:
        """``[n, dim]`` float32 embeddings; ``normalize=False`` returns the raw last-token hidden states."""
        items = as_inputs(inputs)
        task = task or self.task
        prompts = [build_prompt(x, task, self.image_token, self.prompts, self.chat_template) for x in items]
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        # inputs with and without images go in separate batches (the processor needs one image per image token)
        groups = [[i for i, x in enumerate(items) if x.image is not None],
                  [i for i, x in enumerate(items) if x.image is None]]
        bar = tqdm(total=len(items), unit="input", desc="mllm", disable=not self.progress)
        for rows in groups:
            for s in range(0, len(rows), self.batch_size):
                sel = rows[s:s + self.batch_size]
                images = [load_image(items[i].image) for i in sel] if items[sel[0]].image is not None else None
                h = self._last_token_states([prompts[i] for i in sel], images)
                if normalize:
                    h = torch.nn.functional.normalize(h, dim=-1)
                out[sel] = h.cpu().numpy()
                bar.update(len(sel))
        bar.close()
        return out

    # ------------------------------------------------------------- internals
    @torch.inference_mode()
    def _last_token_states(self, prompts: list[str], images: list | None) -> torch.Tensor:
        tok = self.tokenizer
        before = getattr(tok, "padding_side", None)
        tok.padding_side = self.padding_side
        try:
            kwargs = {"text": prompts, "return_tensors": "pt", "padding": "longest"}  # = True, without the max_length notice
            if images is not None:
                kwargs["images"] = images
            batch = self.processor(**kwargs)
        finally:
            if before is not None:
                tok.padding_side = before
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._accepts and v is not None}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        mask = inputs["attention_mask"]
        # positions count real tokens only, so left padding does not shift them
        inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        outputs = self.model(**inputs, output_hidden_states=True, **self._extra)
        hidden = outputs.hidden_states[-1]
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (positions * mask.long()).argmax(dim=1)  # index of the last non-padding token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()


def _load(model: str, dtype: torch.dtype):
    try:
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise EnvironmentProblem("MLLM embedders need transformers: pip install 'transformers>=4.56'") from None
    hf_logging.disable_progress_bar()
    loc = resolve(model, default_kind="mllm")
    offline = None if loc.is_local else hub_unavailable()  # offline: the local cache only, no retries
    local_only = loc.is_local or offline is not None
    try:
        processor = AutoProcessor.from_pretrained(loc.source, local_files_only=local_only)
        hf_model = AutoModelForImageTextToText.from_pretrained(loc.source, dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError) as e:
        if not loc.is_local:
            raise hub_error("MLLM", model, loc.source, offline, e) from None
        raise EnvironmentProblem(f"cannot load MLLM {model!r} from {loc.source}: "
                                 f"{first_line(e)}") from None
    return hf_model, processor, loc.source
