"""The first sample-quality table (issue 11 item 5): judge NLL/PPL, entropy, distinct-4, NFE, wall-clock.

Rows: the demo MDLM (configs/demo.py:demo, stdlib corpus) at 8/32/128/1,024 steps with mdlm,
mdlm_cache, remdm_loop and fef; the AR baseline (configs/ar.py:demo) sampled ancestrally (NFE = L);
both judged by the AR judge (configs/ar.py:judge, ``--judge run:<workdir>``: same tokenizer settings,
text round trip, windows of its 128-token context). The FS-DFM demo (configs/fsdfm.py) is on the
synthetic Markov language (V = 8, L = 32), where the judge is the true chain itself: its rows report
the exact NLL of the samples (``exact_nll``) instead of a judge's, student at 1/2/4/8 steps (fsdfm
sampler), teacher at 1,024 (dfm_euler).

Train the runs first (each resumes if re-run), then:

    python -m dlm_jax train --config configs/demo.py:demo --workdir runs/demo
    python -m dlm_jax train --config configs/ar.py:judge --workdir runs/ar_judge
    python -m dlm_jax train --config configs/ar.py:demo --workdir runs/ar_demo
    python -m dlm_jax train --config configs/fsdfm.py:teacher_demo_mask --workdir runs/fsdfm_teacher_demo
    python -m dlm_jax train --config configs/fsdfm.py:demo_mask --workdir runs/fsdfm_demo
    python benchmarks/quality_table.py --mdlm runs/demo --ar runs/ar_demo --judge run:runs/ar_judge \
        --fsdfm runs/fsdfm_demo --fsdfm-teacher runs/fsdfm_teacher_demo --num-samples 32

Each group's result is merged into ``--out`` (JSON) as it finishes; ``--only`` runs some groups (the
others keep their saved rows); the markdown table is printed from everything saved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GROUPS = ("data", "mdlm", "ar", "fsdfm", "fsdfm_teacher")
COLUMNS = (("gen_nll", "judge NLL", 3), ("gen_ppl", "judge PPL", 1), ("exact_nll", "exact NLL", 3),
           ("unigram_entropy", "entropy (nats)", 3), ("distinct_4", "distinct-4", 3), ("repetition_4", "rep-4", 3))


def _evaluate(workdir, *, sampler, steps, metrics, judge, num_samples, batch_size, seed):
    from dlm_jax.eval import quality_run
    from dlm_jax.runs import load_run

    run = load_run(workdir)
    return quality_run.run_quality(run, steps_list=steps, sampler=sampler, metrics=metrics, judge=judge,
                                   num_samples=num_samples, seed=seed, batch_size=batch_size, out=None)


def _reference(workdir, *, judge, num_samples, **_):
    """The floor: validation sequences of the run's data, through the same decode/retokenise/judge path."""
    from dlm_jax.eval import judges, quality, quality_run
    from dlm_jax.runs import load_run

    run = load_run(workdir)
    texts = quality_run._reference_texts(run, num_samples)
    rows = [run.tokenizer.encode(t) for t in texts]
    r = judges.gen_nll(judges.load_judge(judge), texts)
    row = {k: r[k] for k in ("gen_nll", "gen_ppl", "judge_tokens")}
    row.update(quality.diversity_metrics(rows), steps=0, nfe=0.0, seconds_per_sample=0.0)
    return {"workdir": workdir, "sampler": "validation data", "judge": judge, "num_samples": num_samples,
            "rows": [row]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mdlm"), p.add_argument("--ar"), p.add_argument("--judge")
    p.add_argument("--fsdfm"), p.add_argument("--fsdfm-teacher")
    p.add_argument("--samplers", default="mdlm,mdlm_cache,remdm_loop,fef")
    p.add_argument("--mdlm-steps", default="8,32,128,1024")
    p.add_argument("--fsdfm-steps", default="1,2,4,8")
    p.add_argument("--teacher-steps", default="1024")
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=",".join(GROUPS))
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "quality_table.json"))
    args = p.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    saved = json.load(open(args.out)) if os.path.isfile(args.out) else {"groups": {}}
    common = dict(num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed)
    text_metrics = ["gen_ppl", "entropy", "distinct", "repetition"]
    markov_metrics = ["exact_nll", "entropy", "distinct", "repetition"]
    jobs = []
    if args.mdlm and args.judge:
        jobs.append(("data/validation", "data", args.mdlm, None, [0], text_metrics))
    if args.mdlm:
        jobs += [(f"mdlm/{s}", "mdlm", args.mdlm, s, ints(args.mdlm_steps), text_metrics) for s in args.samplers.split(",")]
    if args.ar:
        jobs.append(("ar/ancestral", "ar", args.ar, None, [1], text_metrics))
    if args.fsdfm:
        jobs.append(("fsdfm/student", "fsdfm", args.fsdfm, "fsdfm", ints(args.fsdfm_steps), markov_metrics))
    if args.fsdfm_teacher:
        jobs.append(("fsdfm/teacher", "fsdfm_teacher", args.fsdfm_teacher, "dfm_euler", ints(args.teacher_steps),
                     markov_metrics))
    only = set(args.only.split(","))
    for key, group, workdir, sampler, steps, metrics in jobs:
        if group not in only:
            continue
        judge = args.judge if "gen_ppl" in metrics else None
        print(f"== {key}: {workdir} steps {steps}", flush=True)
        run_fn = _reference if group == "data" else _evaluate
        result = run_fn(workdir, sampler=sampler, steps=steps, metrics=metrics, judge=judge, **common)
        result.pop("config", None)
        saved["groups"][key] = result
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(saved, f, indent=1, default=str)
    print("\n".join(table(saved)))


def table(saved) -> list[str]:
    """Markdown: one line per (group, step count)."""
    head = "| run / sampler | steps | NFE | " + " | ".join(c[1] for c in COLUMNS) + " | s / sample |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, result in saved["groups"].items():
        for r in result["rows"]:
            cells = [f"{r[k]:.{d}f}" if k in r else "–" for k, _, d in COLUMNS]
            steps = "–" if key.startswith(("ar/", "data/")) else str(r["steps"])
            lines.append(f"| {key} | {steps} | {r['nfe']:.0f} | " + " | ".join(cells) + f" | {r['seconds_per_sample']:.3f} |")
    return lines


if __name__ == "__main__":
    main()
