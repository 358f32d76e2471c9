"""dlm_jax: few-step diffusion language models in JAX/Flax.

Layers (a module imports only from layers below it):
cli -> train / eval / export -> methods -> samplers -> processes -> models -> data / testing.
"""

__version__ = "0.1.0"
