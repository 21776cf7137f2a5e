"""compstudy: an executable study of transformer compression (quantization, distillation,
pruning and hybrids) measured on perplexity, runtime and energy."""
__version__ = "0.1.0"
