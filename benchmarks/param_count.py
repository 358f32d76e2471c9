"""Parameter counts of the DiT at the MDLM-small shape, computed abstractly (nnx.eval_shape, no allocation).

Run: python benchmarks/param_count.py
MDLM reports its small DiT as about 169M parameters, counting both the input embedding and the output
projection (untied) and the time embedder, which exists even when time_conditioning is off.
"""

from __future__ import annotations

import math

import jax

from dlm_jax.models import DiTConfig, abstract_model, count_params

MDLM_SMALL = dict(vocab_size=50258, num_classes=50258, width=768, depth=12, heads=12, cond_dim=128,
                  max_len=1024)


def breakdown(config: DiTConfig) -> dict[str, int]:
    _, params = abstract_model(config)
    size = {k: sum(math.prod(x.shape) for x in jax.tree.leaves(params[k])) for k in params}
    return {
        "total": count_params(params),
        "input embedding": size["adapter"],
        "output projection": sum(math.prod(x.shape) for x in jax.tree.leaves(params["final"]["linear"])),
        "conditioning": size["cond"],
        "blocks": size["blocks"],
    }


def main() -> None:
    rows = [("MDLM small, conditioning='none'", DiTConfig(**MDLM_SMALL, conditioning="none")),
            ("MDLM small, conditioning='t'", DiTConfig(**MDLM_SMALL, conditioning="t")),
            ("FS-DFM student shape, conditioning='th'", DiTConfig(**MDLM_SMALL, conditioning="th"))]
    cols = ("total", "input embedding", "output projection", "conditioning", "blocks")
    print("| model | " + " | ".join(cols) + " | non-embedding |")
    print("|---" * (len(cols) + 2) + "|")
    for name, config in rows:
        b = breakdown(config)
        non_emb = b["total"] - b["input embedding"] - b["output projection"]
        print(f"| {name} | " + " | ".join(f"{b[c]:,}" for c in cols) + f" | {non_emb:,} |")
    print("\nMDLM (Sahoo et al., 2024) reports ~169M for the small DiT (untied input/output embeddings included).")


if __name__ == "__main__":
    main()
