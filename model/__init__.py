"""Pure-PyTorch Paella v1: the denoiser, the VQGAN, the CLIP encoder, the sampler and the pipeline."""
