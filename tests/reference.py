"""Reference computations the fast paths are checked against, and conformance checks."""

import inspect

import torch

from lsr.retrieval import Retriever


def splade_textbook(enc, texts):
    """log1p(relu(logits)), max over the unpadded positions, one text at a time; special tokens zeroed."""
    rows = []
    with torch.inference_mode():
        for t in texts:
            if not t.strip():
                rows.append(torch.zeros(len(enc.vocab)))
                continue
            x = enc.tokenizer([t], truncation=True, max_length=enc.max_length, return_tensors="pt").to(enc.device)
            logits = enc.model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
            rows.append(torch.log1p(torch.relu(logits.float()))[0].amax(0).cpu())
    out = torch.stack(rows)
    out[:, sorted(enc.vocab.special_ids)] = 0
    return out.numpy()


def signature_problems(retriever: object) -> list[str]:
    """Differences between the methods of ``retriever`` (an object or a class) and :class:`Retriever`'s.

    ``isinstance(x, Retriever)`` only checks that the methods exist; this also
    compares parameter names, order and defaults, which callers such as the
    hybrid reranker pass by keyword. An empty list means it conforms.
    """
    problems = []
    for name in ("search", "batch_search"):
        method = getattr(retriever, name, None)
        if not callable(method):
            owner = retriever.__name__ if isinstance(retriever, type) else type(retriever).__name__
            problems.append(f"{owner} has no method {name}()")
            continue
        want = [(p.name, p.default) for p in list(inspect.signature(getattr(Retriever, name)).parameters.values())[1:]]
        params = list(inspect.signature(method).parameters.values())
        if isinstance(retriever, type):  # a class: drop ``self``
            params = params[1:]
        have = [(p.name, p.default) for p in params]
        if have[:len(want)] != want or any(p.default is inspect.Parameter.empty for p in params[len(want):]):
            owner = retriever.__name__ if isinstance(retriever, type) else type(retriever).__name__
            problems.append(f"{owner}.{name}({', '.join(n for n, _ in have)}) does not match "
                            f"{name}({', '.join(n for n, _ in want)})")
    return problems
