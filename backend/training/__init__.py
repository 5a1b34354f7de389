"""Train vitscope's own self-supervised ViTs (CL, MIM, hybrid) and probe them (ANALYSES.md A7-A9).

- ``encoder``: the timm ViT the objectives share (default: ViT-Tiny shape, patch 4, for 32 px images);
- ``data``: ImageFolder directories and the CIFAR-10 archives, decoded once into a uint8 tensor;
- ``augment``: batched augmentations that run on the training device;
- ``objectives``: SimMIM (``mim``), MoCo v3 (``cl``) and their weighted sum (``hybrid``);
- ``trainer``: the loop (AdamW, cosine schedule, bf16 on CUDA, checkpoints) and the exported weights + card;
- ``probe`` / ``noise``: per-layer linear probes, kNN and frequency-band noise robustness.
"""
