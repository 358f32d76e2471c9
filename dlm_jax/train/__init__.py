"""train layer of dlm_jax (see DESIGN.md)."""
