"""A child process that loads the text tower while this one parses, validates and tokenizes.

A one-shot ``zsindex labels add`` spends ~5 s importing torch and open_clip (which pulls
torchvision, timm and ``torch._dynamo``) and building the model, and ~3 s parsing, validating,
hashing and tokenizing its labels. Imports are Python bytecode: a thread cannot overlap them with
other Python work, a process can. :func:`start_text_worker` starts ``python -P -m
zsindex.encoders.text_worker`` (this module), which imports and loads the model at once;
meanwhile this process does everything that needs no torch (tokenizing with the standalone CLIP
BPE tokenizer) and then hands the token ids over. The worker returns the same L2-normalised
features :meth:`Encoder.encode_tokens` would compute: a standard CLIP text tower it builds with
torch alone (:mod:`zsindex.encoders.plain_tower`, ~2 s sooner ready than importing open_clip); any
other model as open_clip builds it, through that very method.

This pays off only where this process has not imported open_clip yet and has two CPUs: a running
service or a program that already holds a model encodes in process. Models resolved without
open_clip qualify (``zsindex-tiny``, ``local-dir:``, ``hf-hub:``, an architecture with a weights
file); an architecture with a pretrained tag needs open_clip to read the tag, so it loads in
process.

The parts: the frames both sides exchange (:mod:`zsindex.encoders.worker_frames`), the parent's
handle (:mod:`zsindex.encoders.worker_parent`: :class:`TextWorker`, :func:`start_text_worker`,
importable from here) and the worker process (:mod:`zsindex.encoders.worker_child`, run by this
module's ``__main__``).
"""

from __future__ import annotations

from zsindex.encoders.worker_parent import TextWorker, start_text_worker

__all__ = ["TextWorker", "start_text_worker"]


if __name__ == "__main__":
    from zsindex.encoders.worker_child import main

    main()
