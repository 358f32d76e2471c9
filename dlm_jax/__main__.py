"""``python -m dlm_jax {train,sample,eval}``: see ``dlm_jax.cli``."""

from dlm_jax.cli import main

if __name__ == "__main__":
    main()
