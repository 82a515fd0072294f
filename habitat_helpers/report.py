"""The book's results chapter, written from the numbers the notebooks recorded.

Each notebook writes ``<out>/outputs/<notebook>/metrics.json``; this module turns those files into
small Markdown fragments (tables and one sentence of verdict, no headings) that ``book/results.md``
includes, so no number in that chapter is typed by hand::

    python -m habitat_helpers report build/outputs build/results

:func:`write_results` is also called at the end of :func:`habitat_helpers.notebooks.run_all`.
A value that a run did not record (an older notebook, a metric that could not be computed) is
shown as ``–`` instead of failing, so the book always builds and the gap is visible.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from . import calibration, labels
from .labels import LEVELS

MISSING = "–"
MODEL_ORDER = ("aligned", "aligned (all inputs)", "raw photo", "raw satellite", "raw gps", "raw GPS",
               "raw concatenated", "k-NN on coordinates", "majority")
METRIC_NAMES = {"accuracy": "accuracy", "top3_accuracy": "top-3 accuracy", "macro_f1": "macro-F1",
                "balanced_accuracy": "balanced accuracy", "ece": "ECE"}
#: The chapter on real data (LUCAS 2015 land cover); the chapters before it run on the synthetic demo.
REAL_NOTEBOOK = "06_lucas_land_cover"
NOTEBOOKS = ("01_explore_data", "02_extract_embeddings", "03_contrastive_alignment",
             "04_classify_habitats", "05_map_habitats", REAL_NOTEBOOK)
#: The margin of macro-F1 by which the project's best model should lead the best classical
#: baseline at every level on real data (the aim of :func:`real_data_table`).
REAL_DATA_AIM = 0.02


# ---------------------------------------------------------------------------------------------
# formatting


def number(value, digits: int = 3) -> str:
    """``value`` rounded to ``digits`` decimals, or ``–`` when it is missing, NaN or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return MISSING
    if math.isnan(value) or math.isinf(value):
        return MISSING
    return f"{value:.{digits}f}"


def mean_std(mean, std=None, digits: int = 3) -> str:
    """``0.804 ± 0.073``; the mean alone when there is no standard deviation; ``–`` without a mean."""
    m = number(mean, digits)
    if m == MISSING:
        return MISSING
    s = number(std, digits)
    return m if s == MISSING else f"{m} ± {s}"


def mean_std_table(summary, metric: str = "macro_f1", models=None, digits: int = 3, label: str | None = None):
    """A :meth:`habitat_helpers.evaluation.CVResult.summary` table as text, ``0.812 ± 0.034`` per
    model (rows, in the order of ``models`` when given) and level (columns ``<label> level <k>``,
    ``label`` defaulting to the metric's name)."""
    mean, std = summary[metric]["mean"].unstack("level"), summary[metric]["std"].unstack("level")
    if models is not None:
        mean, std = mean.reindex(models), std.reindex(models)
    text = pd.DataFrame({c: [mean_std(a, b, digits) for a, b in zip(mean[c], std[c])] for c in mean.columns},
                        index=mean.index)
    name = label if label is not None else {"macro_f1": "macro-F1"}.get(metric, metric.replace("_", " "))
    return text.rename(columns=lambda k: f"{name} level {k}" if name else k)


def percent(value, digits: int = 0) -> str:
    """A share as a percentage (``0.25`` -> ``25 %``), or ``–``."""
    n = number(value * 100 if isinstance(value, (int, float)) and not isinstance(value, bool) else None, digits)
    return MISSING if n == MISSING else f"{n} %"


def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A GitHub/MyST pipe table. ``align`` holds ``"l"`` or ``"r"`` per column (default: first left, rest right)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), line(rule), *(line(r) for r in rows)]) + "\n"


def _ordered(names) -> list[str]:
    names = list(names)
    known = [m for m in MODEL_ORDER if m in names]
    return known + [m for m in names if m not in known]


def _not_recorded(what: str) -> str:
    return (f"*{what}: not recorded in this run ({MISSING}). The metrics come from an older notebook "
            "version or another profile; run `make book` to record them.*\n")


# ---------------------------------------------------------------------------------------------
# reading


def load_outputs(outputs_dir: str | Path) -> dict[str, dict]:
    """``{notebook name: metrics}`` for the numbered notebooks (``NOTEBOOKS``); ``{}`` for a notebook that
    wrote nothing (an older run, or one that did not run it)."""
    outputs_dir = Path(outputs_dir)
    found = {}
    for name in NOTEBOOKS:
        path = outputs_dir / name / "metrics.json"
        found[name] = json.loads(path.read_text()) if path.exists() else {}
    return found


# ---------------------------------------------------------------------------------------------
# fragments


def run_table(outputs: dict[str, dict]) -> str:
    """What was run: profile, seed, data, sites, labels, folds, seeds, spatial blocks and buffer."""
    explore = outputs.get("01_explore_data", {})
    classify = outputs.get("04_classify_habitats", {})
    embed = outputs.get("02_extract_embeddings", {})
    first = next((m for name, m in outputs.items() if m and name != REAL_NOTEBOOK), {})
    synthetic = first.get("synthetic")
    labelled = explore.get("n_labelled", {})
    seeds = classify.get("seeds")
    rows = [
        ["profile", str(first.get("profile", MISSING))],
        ["seed", str(first.get("seed", MISSING))],
        ["data", {True: "synthetic demo (generated habitats, photos and satellite patches over real land points)",
                  False: "real data"}.get(synthetic, MISSING)],
        ["sites", number(explore.get("n_sites"), 0)],
        ["sites with ground photos", number(explore.get("n_with_photos"), 0)],
        ["labelled sites at level 1 / 2 / 3", " / ".join(number(labelled.get(f"level{k}"), 0) for k in LEVELS)],
        ["image encoder / location encoder",
         f"{embed.get('image_encoder', MISSING)} / {embed.get('location_encoder', MISSING)}"],
        ["spatial folds × seeds",
         f"{number(classify.get('folds'), 0)} × {len(seeds) if isinstance(seeds, list) else MISSING}"],
        ["seeds of the folds", ", ".join(map(str, seeds)) if isinstance(seeds, list) and seeds else MISSING],
        ["spatial block size (degrees)", block_size(classify)],
        ["buffer around the test sites (km)", number(classify.get("buffer_km"), 1)],
        ["spatial-positive radius (km)", number(classify.get("radius_km"), 1)],
    ]
    return markdown_table(["", "this run"], rows, align=["l", "l"])


def block_size(classify: dict) -> str:
    """The block size with the rule that set it: ``3.70 (auto: labels agree above chance up to 270 km)``,
    ``0.50 (given)``; the bare number when the run did not record the rule (an older notebook)."""
    rule = classify.get("block_size_rule")
    rule = rule if isinstance(rule, dict) else {}
    size = rule.get("block_size_deg")
    size = number(size if _known(size) else classify.get("block_size_deg"), 2)
    how = rule.get("block_size_rule")
    if size == MISSING or not isinstance(how, str) or not how:
        return size
    reach = number(rule.get("autocorrelation_range_km"), 0)
    if how.startswith("auto"):
        how = "auto" if reach == MISSING else f"auto: labels agree above chance up to {reach} km"
    return f"{size} ({how})"


def _known(value) -> bool:
    return number(value) != MISSING


def interval(low, high, digits: int = 3) -> str:
    """``[-0.010, 0.050]``, or ``–`` when a bound is missing."""
    lo, hi = number(low, digits), number(high, digits)
    return MISSING if MISSING in (lo, hi) else f"[{lo}, {hi}]"


def claim_rows(classify: dict) -> list[dict]:
    """The claim records of notebook 4 with the verdict recomputed from their numbers.

    A row *holds* when the paired 95 % interval of the aligned model's lead over the best mono-scale
    baseline (mean difference of macro-F1 over folds × seeds) lies above 0, i.e. ``ci_low > 0``;
    ``held`` is ``None`` when a number is missing, as in the rows of an older notebook, which recorded
    fold standard deviations instead of an interval.
    """
    best = classify.get("best_mono_scale")
    rows = []
    for r in classify.get("claim") or []:
        a, b = r.get("aligned"), r.get(best) if best else None
        diff = r.get("difference")
        if not _known(diff) and _known(a) and _known(b):
            diff = a - b
        low, high = r.get("ci_low"), r.get("ci_high")
        known = all(_known(v) for v in (a, b, diff, low, high))
        rows.append({"fraction": r.get("labelled fraction"), "level": r.get("level"), "aligned": a,
                     "baseline": b, "difference": diff, "ci_low": low, "ci_high": high,
                     "interval": r.get("interval"),
                     "wins": r.get("aligned wins", r.get("folds aligned wins")),
                     "held": (low > 0) if known else None})
    return rows


def claim_verdict(classify: dict) -> bool | None:
    """Whether the central claim held with all labels: at levels 2 and 3 the paired 95 % interval of
    the aligned model's lead over the best mono-scale baseline lies above 0. ``None`` when the run did
    not record it."""
    rows = [r for r in claim_rows(classify) if r["fraction"] == 1.0 and r["level"] in (2, 3)]
    if {r["level"] for r in rows} != {2, 3} or any(r["held"] is None for r in rows):
        return None
    return all(r["held"] for r in rows)


def _levels(levels) -> str:
    levels = [str(lv) for lv in levels]
    return f"level {levels[0]}" if len(levels) == 1 else "levels " + " and ".join(levels)


def _where(row: dict) -> str:
    """Where a row's interval lies, in words."""
    if row["held"] is None:
        return "not decided"
    if row["ci_low"] > 0:
        return "above 0"
    return "below 0: the baseline is better" if row["ci_high"] < 0 else "includes 0"


def _methods(rows) -> str:
    """The interval methods recorded in ``rows`` (``interval`` texts), once each."""
    texts = (r.get("interval") for r in rows)
    return "; ".join(dict.fromkeys(t for t in texts if isinstance(t, str) and t))


def claim_table(classify: dict, regime: str = "With all labels") -> str:
    """The central claim, per labelled fraction and level, with its verdict (a sentence starting
    with ``regime``, the labels it was measured with)."""
    rows = claim_rows(classify)
    if not rows:
        return _not_recorded("The comparison with the best mono-scale baseline")
    best = classify.get("best_mono_scale", MISSING)
    yes_no = {True: "yes", False: "no", None: MISSING}
    table = markdown_table(
        ["labelled fraction", "level", "aligned", best, "difference", "95 % interval", "aligned wins",
         "better"],
        [[percent(r["fraction"]), str(r["level"]), number(r["aligned"]), number(r["baseline"]),
          number(r["difference"]), interval(r["ci_low"], r["ci_high"]), r["wins"] or MISSING,
          yes_no[r["held"]]] for r in rows])
    verdict = claim_verdict(classify)
    full = {r["level"]: r for r in rows if r["fraction"] == 1.0 and r["level"] in (2, 3)}
    detail = "; ".join(f"level {lv}: difference {number(r['difference'])}, interval "
                       f"{interval(r['ci_low'], r['ci_high'])}, {_where(r)}"
                       for lv, r in sorted(full.items()))
    failed = _levels(lv for lv in (2, 3) if lv in full and full[lv]["held"] is False)
    if not any(_known(r["ci_low"]) or _known(r["ci_high"]) for r in rows):
        return table + "\n" + ("**The run recorded no paired interval, so the claim is undecided here** "
                               "(the metrics come from an older notebook version; run `make book` to "
                               "record it).\n")
    method = _methods(full.values())
    method = f" The intervals are paired over the same folds and seeds ({method})." if method else ""
    sentence = {
        True: f"**{regime} the claim held in this run**: at both levels 2 and 3 the 95 % interval "
              f"of the aligned model's lead over {best} in macro-F1 lies above 0 ({detail}).",
        False: f"**{regime} the claim did not hold in this run**: at {failed} the 95 % interval "
               f"of the aligned model's lead over {best} in macro-F1 does not lie above 0 ({detail}).",
        None: f"**The run did not record enough numbers to decide the claim ({regime.lower()})**"
              + (f" ({detail})." if detail else "."),
    }[verdict]
    return table + "\n" + sentence + method + "\n"


def every_site_table(classify: dict) -> str:
    """The claim measured again with every site labelled from the synthetic demo's true habitats
    (chapter 4's ``every_site_labelled``): the same test blocks and seeds, only the labels change."""
    every = classify.get("every_site_labelled")
    if not isinstance(every, dict) or not every.get("claim"):
        return ("Only the synthetic demo knows every site's habitat, so this run has no comparison with "
                "every site labelled.\n")
    return claim_table(every, regime="With every site labelled")


def comparisons_table(classify: dict) -> str:
    """The aligned model against every baseline at every level (all labels): both means of macro-F1, the
    mean paired difference over folds × seeds, its 95 % interval, the pairs won and the verdict, which is
    recomputed from the interval (``better`` above 0, ``worse`` below 0, else ``no clear difference``)."""
    records = [r for r in classify.get("comparisons") or [] if isinstance(r, dict)]
    if not records:
        return _not_recorded("The comparison with every baseline")
    model = records[0].get("model") or "aligned"
    names = _ordered(dict.fromkeys(str(r.get("baseline")) for r in records))
    order = {name: k for k, name in enumerate(names)}
    records.sort(key=lambda r: (order[str(r.get("baseline"))], str(r.get("level"))))
    rows = []
    for r in records:
        low, high = r.get("ci_low"), r.get("ci_high")
        verdict = (MISSING if not (_known(low) and _known(high))
                   else "better" if low > 0 else "worse" if high < 0 else "no clear difference")
        wins, pairs = number(r.get("wins"), 0), number(r.get("pairs"), 0)
        rows.append([str(r.get("baseline", MISSING)), str(r.get("level", MISSING)),
                     number(r.get("model_mean", r.get(model))), number(r.get("baseline_mean")),
                     number(r.get("difference")), interval(low, high),
                     MISSING if MISSING in (wins, pairs) else f"{wins}/{pairs}", verdict])
    table = markdown_table(["baseline", "level", f"{model} (mean)", "baseline (mean)", "difference",
                            "95 % interval", f"{model} wins", "verdict"], rows, align=["l"] + ["r"] * 6 + ["l"])
    method = _methods(records)
    note = (f"Macro-F1, mean over folds × seeds; the difference and its interval are paired over the same "
            f"folds and seeds ({method or 'method not recorded'}). *better*: the interval lies above 0; "
            "*worse*: below 0; *no clear difference*: it includes 0.")
    return table + "\n" + note + "\n"


def choices_table(classify: dict) -> str:
    """Per model, the hyperparameter grid searched on the validation blocks and the settings chosen, each
    with the number of folds × seeds that chose it (most often first)."""
    grids = classify.get("grids") or {}
    counts: dict[str, dict[str, int]] = {}
    for key, n in (classify.get("choices") or {}).items():
        model, _, setting = (part.strip() for part in key.partition("|"))
        setting = setting if setting and setting != "-" else "nothing to choose"
        counts.setdefault(model, {})[setting] = n if _known(n) else 0
    if not grids and not counts:
        return _not_recorded("The hyperparameters chosen")
    rows = []
    for name in _ordered(dict.fromkeys([*grids, *counts])):
        grid = grids.get(name)
        if isinstance(grid, dict):
            grid = "; ".join(f"{p} ∈ {{{', '.join(map(str, values))}}}" if isinstance(values, (list, tuple))
                             else f"{p} = {values}" for p, values in grid.items()) or "nothing to choose"
        else:
            grid = MISSING
        chosen = counts.get(name, {})
        total = number(sum(chosen.values()), 0)
        most_often_first = sorted(chosen.items(), key=lambda kv: (-kv[1], kv[0]))
        chosen = "; ".join(f"{setting} ({number(n, 0)}/{total})" for setting, n in most_often_first)
        rows.append([name, grid, chosen or MISSING])
    return markdown_table(["model", "grid searched", "chosen (folds × seeds)"], rows, align=["l", "l", "l"])


def scores_table(classify: dict, level: int, subset: str = "models") -> str:
    """Every model at one EUNIS level: mean ± std over folds of each metric, and the test sites per fold."""
    models = classify.get(subset) or {}
    if not models:
        return _not_recorded("Scores per model")
    rows = []
    for name in _ordered(models):
        scores = models[name].get(f"level{level}", {})
        rows.append([name] + [mean_std(scores.get(m), scores.get(f"{m}_std")) for m in METRIC_NAMES]
                    + [number(scores.get("n"), 0)])
    return markdown_table(["model", *METRIC_NAMES.values(), "test sites per fold"], rows)


def macro_f1_table(classify: dict, subset: str = "models") -> str:
    """Macro-F1 (mean ± std over folds) per model and level."""
    models = classify.get(subset) or {}
    if not models:
        return _not_recorded("Macro-F1 per model")
    rows = [[name] + [mean_std(models[name].get(f"level{k}", {}).get("macro_f1"),
                               models[name].get(f"level{k}", {}).get("macro_f1_std")) for k in LEVELS]
            for name in _ordered(models)]
    return markdown_table(["model", "level 1", "level 2", "level 3"], rows)


def reference_table(outputs: dict[str, dict]) -> str:
    """Chance accuracy and the accuracy reachable from location alone (the demo's generating variables)."""
    classify = outputs.get("04_classify_habitats", {})
    ceiling = (classify.get("ceiling_accuracy_from_location")
               or outputs.get("01_explore_data", {}).get("ceiling_accuracy") or {})   # None for real data
    classes = outputs.get("01_explore_data", {}).get("n_classes", {}) or classify.get("n_classes", {})
    rows = [["classes with labelled sites"] + [number(classes.get(f"level{k}"), 0) for k in LEVELS],
            ["best accuracy reachable from location (demo's generating variables)"]
            + [number(ceiling.get(f"level{k}")) for k in LEVELS]]
    return markdown_table(["", "level 1", "level 2", "level 3"], rows)


def label_efficiency_table(classify: dict) -> str:
    """Macro-F1 per model, level and fraction of the labelled training sites (mean over folds)."""
    eff = classify.get("label_efficiency_macro_f1") or {}
    if not eff:
        return _not_recorded("Label efficiency")
    parsed = {}
    for key, value in eff.items():
        model, level, fraction = (part.strip() for part in key.split("|"))
        parsed[(model, level, float(fraction))] = value
    fractions = sorted({f for _, _, f in parsed})
    levels = sorted({lv for _, lv, _ in parsed})
    header = ["model"] + [f"level {lv.removeprefix('level')}, {percent(f)}" for lv in levels for f in fractions]
    rows = [[model] + [number(parsed.get((model, lv, f))) for lv in levels for f in fractions]
            for model in _ordered({m for m, _, _ in parsed})]
    return markdown_table(header, rows)


def any_modality_table(classify: dict) -> str:
    """Macro-F1 when only some inputs are given at prediction time."""
    table = classify.get("any_modality_macro_f1") or {}
    if not table:
        return _not_recorded("Any-modality inference")
    rows = []
    for key, scores in table.items():
        inputs, _, model = key.partition("|")
        rows.append([inputs.strip(), model.strip() or MISSING] + [number(scores.get(f"level{k}")) for k in LEVELS])
    rows.sort(key=lambda r: (-r[0].count("+"), r[0], r[1] != "aligned", r[1]))
    return markdown_table(["inputs at prediction time", "model", "level 1", "level 2", "level 3"], rows,
                          align=["l", "l", "r", "r", "r"])


ENV_ROWS = ("GPS alone (raw GeoCLIP)", "k-NN on coordinates", "env alone (raw covariates)",
            "GPS + env, raw concatenated", "GPS + env, aligned", "photo + satellite + GPS, raw concatenated",
            "photo + satellite + GPS + env, raw concatenated", "photo + satellite + GPS, aligned (above)")


def environment_table(classify: dict) -> str:
    """Notebook 4's comparison with and without the environmental covariates (macro-F1, mean ± std
    over the same spatial folds), in the notebook's row order, then any other rows."""
    table = classify.get("env_comparison_macro_f1") or {}
    if not table:
        return _not_recorded("The comparison with the environmental covariates")
    order = [r for r in ENV_ROWS if r in table] + sorted(r for r in table if r not in ENV_ROWS)
    rows = [[name] + [mean_std((table[name].get(f"level{k}") or {}).get("mean"),
                               (table[name].get(f"level{k}") or {}).get("std")) for k in LEVELS]
            for name in order]
    return markdown_table(["inputs, model", "level 1", "level 2", "level 3"], rows)


def ablation_table(align: dict) -> str:
    """Notebook 3's ablations: radius, weights, temperature and modality pairs."""
    rows = align.get("ablation") or []
    if not rows:
        return _not_recorded("Ablations")
    recall = next((k for k in rows[0] if "recall" in k), None)
    header = ["variant", "macro-F1 level 1", "macro-F1 level 2", "macro-F1 level 3"]
    header += [recall, "best epoch"] if recall else ["best epoch"]
    out = []
    for r in rows:
        line = [r.get("variant", MISSING)] + [number(r.get(f"macro-F1 level{k}")) for k in LEVELS]
        line += ([number(r.get(recall))] if recall else []) + [number(r.get("best epoch"), 0)]
        out.append(line)
    return markdown_table(header, out)


def retrieval_table(align: dict) -> str:
    """Cross-modal retrieval on held-out blocks before and after alignment."""
    before, after = align.get("retrieval_before") or {}, align.get("retrieval_after") or {}
    if not after:
        return _not_recorded("Retrieval")
    habitat = align.get("retrieval_habitat_only") or {}     # the synthetic demo's reference, if recorded
    rows = []
    for pair in sorted(set(before) | set(after)):
        b, a = before.get(pair, {}), after.get(pair, {})
        n = a.get("n", b.get("n"))
        rows.append([pair.replace("_to_", " → "), number(n, 0), number(10 / n if isinstance(n, (int, float)) and n
                                                                       else None),
                     number(b.get("recall@10")), number(a.get("recall@10"))]
                    + ([number(habitat.get(pair, {}).get("recall@10"))] if habitat else [])
                    + [number(b.get("recall@1")), number(a.get("recall@1"))])
    return markdown_table(["query → gallery", "queries", "chance recall@10", "recall@10 before", "recall@10 after"]
                          + (["recall@10 knowing the true level-3 habitat only"] if habitat else [])
                          + ["recall@1 before", "recall@1 after"], rows)


def map_table(maps: dict) -> str:
    """Notebook 5: the grid, its uncertainty and the GPS-only check on held-out sites."""
    if not maps:
        return _not_recorded("The habitat map")
    held = maps.get("held_out_gps_only") or {}
    shares = maps.get("level1_share") or {}
    rows = [["grid cells", number(maps.get("n_cells"), 0)],
            ["cell size (degrees)", number(maps.get("resolution_deg"), 2)],
            ["mean probability of the level-3 prediction", number(maps.get("mean_p_l3"))],
            ["mean entropy of the level-3 prediction (nats)", number(maps.get("mean_entropy_l3"))],
            ["level-3 code always under the level-2 code", {True: "yes", False: "no"}.get(
                maps.get("hierarchy_consistent"), MISSING)]]
    rows += [[f"held-out sites, GPS only: macro-F1 level {k}", number(held.get(f"level{k}", {}).get("macro_f1"))]
             for k in LEVELS]
    scheme = maps.get("label_scheme", "eunis")
    rows += [[f"cells predicted as {_named(code, scheme)}", percent(share, 1)]
             for code, share in sorted(shares.items(), key=lambda kv: -kv[1])]
    return markdown_table(["", "this run"], rows)


def _named(code: str, scheme: str = "eunis") -> str:
    """``T (Forests and other wooded land)``; the bare code when it is not a code of ``scheme``."""

    try:
        return f"{code} ({labels.get(scheme).name_of(code)})"
    except (KeyError, ValueError, FileNotFoundError):
        return str(code)


def _verdict(low, high) -> str:
    """``better`` when the interval lies above 0, ``worse`` below 0, ``no clear difference`` when it
    includes 0, ``–`` when a bound is missing (recomputed: a recorded verdict is not read)."""
    if not (_known(low) and _known(high)):
        return MISSING
    return "better" if low > 0 else "worse" if high < 0 else "no clear difference"


def _real_models(real: dict) -> list[tuple[str, str]]:
    """``(model, group)`` in the order of the table: the project's models, then the classical
    baselines, then any other model recorded."""
    models = real.get("models") or {}
    project = [m for m in real.get("project_models") or [] if m in models]
    control = [m for m in real.get("control_models") or [] if m in models and m not in project]
    baselines = [m for m in real.get("baseline_models") or [] if m in models and m not in project + control]
    others = _ordered(m for m in models if m not in project and m not in control and m not in baselines)
    return ([(m, "project") for m in project] + [(m, "capacity control") for m in control]
            + [(m, "baseline") for m in baselines] + [(m, MISSING) for m in others])


def _aim_sentence(records: list[dict]) -> str:
    """Whether the project's best model led the best baseline by :data:`REAL_DATA_AIM` or more at
    every level, with an interval above 0; per level what was reached."""
    by_level = {r.get("level"): r for r in records}
    parts, met = [], []
    for level in LEVELS:
        r = by_level.get(level)
        diff = r.get("difference") if r else None
        low, high = (r.get("ci_low"), r.get("ci_high")) if r else (None, None)
        if not (_known(diff) and _known(low) and _known(high)):
            parts.append(f"level {level}: not recorded")
            met.append(None)
            continue
        reached = diff >= REAL_DATA_AIM
        where = "above 0" if low > 0 else "below 0" if high < 0 else "includes 0"
        parts.append(f"level {level}: difference {number(diff)}, "
                     f"{'reached' if reached else 'did not reach'} {REAL_DATA_AIM:g}; interval "
                     f"{interval(low, high)}, {where}")
        met.append(reached and low > 0)
    aim = (f"The aim on real data: the project's best model ahead of the best classical baseline by at "
           f"least {REAL_DATA_AIM:g} macro-F1 at every level. It counts as met at a level when the mean "
           f"difference reaches {REAL_DATA_AIM:g} and its paired 95 % interval lies above 0.")
    if any(m is None for m in met):
        verdict = "**This run did not record enough numbers to decide it**"
    elif all(met):
        verdict = "**The aim was met in this run**"
    else:
        missed = [str(lv) for lv, m in zip(LEVELS, met) if not m]
        missed = ("level " + missed[0] if len(missed) == 1
                  else "levels " + ", ".join(missed[:-1]) + " and " + missed[-1])
        verdict = f"**The aim was not met in this run** (not at {missed})"
    return f"{aim} {verdict}: " + "; ".join(parts) + ".\n"


def _crosswalk_line(real: dict, names: list[str]) -> str:
    """The macro-F1 at EUNIS level 1 through the LC1 -> EUNIS crosswalk, or ``""``."""
    eunis = real.get("eunis_l1")         # chapter 6's scores mapped to EUNIS level 1, not a table column
    if not isinstance(eunis, dict) or not eunis.get("macro_f1"):
        return ""
    walk = eunis.get("crosswalk") or {}
    walk = ", ".join(f"{lc} → {code if isinstance(code, str) and code else 'none'}"
                     for lc, code in sorted(walk.items()))
    f1 = eunis["macro_f1"]
    order = [m for m in names if m in f1] + _ordered(m for m in f1 if m not in names)
    scores = ", ".join(f"{m} {number(f1[m])}" for m in order)
    return (f"Predictions and truth mapped to EUNIS level 1 (crosswalk {walk or MISSING}) give macro-F1 "
            f"{scores}.\n")


def calibration_fragment(outputs: dict[str, dict]) -> str:
    """The demo's inputs beside published real-data figures (chapter 2's ``calibration_probes``,
    :func:`habitat_helpers.calibration.calibration_table`), with chapter 6's raw GPS + covariates score at
    level 1 as the measured figure for location + environment when the run has it."""

    probes = outputs.get("02_extract_embeddings", {}).get("calibration_probes")
    if not probes:
        return _not_recorded("The calibration of the demo's inputs (chapter 2, synthetic demo only)")
    real = outputs.get(REAL_NOTEBOOK, {}).get("models", {})
    measured = real.get("raw concatenated", {}).get("level1", {}).get("macro_f1")
    import pandas as pd

    table = calibration.calibration_table(pd.DataFrame(probes),
                                   {"gps + env": measured} if _known(measured) else None,
                                   outputs["02_extract_embeddings"].get("demo_ceilings"))
    rows = []
    for r in table.to_dict(orient="records"):
        low, high = r["published low"], r["published high"]
        if not _known(low):
            published = MISSING
        elif low == high:
            published = number(low)
        else:
            published = f"{number(low)}-{number(high)}"
        rows.append([r["inputs"], str(r["level"]), number(r["ceiling"]), number(r["demo probe (macro-F1)"]),
                     published, number(r["gap"]), r["what"], r["source"]])
    text = markdown_table(["demo inputs", "EUNIS level", "ceiling (accuracy)", "demo probe (macro-F1)",
                           "published", "gap", "published task", "source"], rows,
                          align=["l", "r", "r", "r", "r", "r", "l", "l"])
    return (text + "\n*ceiling*: the accuracy reachable from the generating variables (for an image input, the "
            "share of sites whose images show the cues of the true habitat at that level; for location, the "
            "best guess from the known habitat probabilities). The demo probe is a logistic regression on the raw embeddings of the demo's sites, fitted "
            "on training blocks and scored on held-out blocks against every site's true habitat. *gap*: the "
            "probe minus the nearest end of the published range (0 inside it; positive: the demo's input is "
            "easier than the real one). The published tasks differ from the demo's (other classes, other "
            "metrics), so read the gaps as orders of magnitude.\n")


def real_data_table(outputs: dict[str, dict]) -> str:
    """The real-data chapter (LUCAS 2015 land cover, ``06_lucas_land_cover``): what was run, macro-F1
    (mean ± std over folds × seeds) per model and level, the project's models first, then the
    classical baselines; per level the best project model against the best baseline (paired
    difference, 95 % interval, wins, verdict recomputed from the interval); a sentence on the aim
    (:data:`REAL_DATA_AIM`) and the macro-F1 at EUNIS level 1 through the crosswalk when recorded.
    Says so, instead of failing, when the run has no such output (an older run)."""
    real = outputs.get(REAL_NOTEBOOK) or {}
    if not real.get("models") and not real.get("best_versus"):
        return _not_recorded("The real-data chapter (LUCAS 2015 land cover)")
    seeds = real.get("seeds")
    n_seeds = len(seeds) if isinstance(seeds, list) else MISSING
    data = real.get("data") or "real data"
    attribution = real.get("attribution")
    synthetic = " (recorded as synthetic)" if real.get("synthetic") is True else ""
    intro = (f"Data: {data}{synthetic}" + (f" ({attribution})" if attribution else "")
             + f": {number(real.get('n_sites'), 0)} of {number(real.get('n_points'), 0)} points, labelled with "
             f"their land cover ({real.get('label_scheme', MISSING)}), {number(real.get('folds'), 0)} spatial folds "
             f"× {n_seeds} seeds, square spatial blocks whose side in degrees is {block_size(real)}.\n")
    parts = [intro]
    models = real.get("models") or {}
    rows = []
    for name, group in _real_models(real):
        cells = [mean_std((models[name].get(f"level{k}") or {}).get("macro_f1"),
                          (models[name].get(f"level{k}") or {}).get("macro_f1_std")) for k in LEVELS]
        rows.append([name, group] + cells)
    if rows:
        parts.append(markdown_table(["model", "group", "level 1", "level 2", "level 3"], rows,
                                    align=["l", "l", "r", "r", "r"])
                     + "\nMacro-F1, mean ± std over folds × seeds; *project*: the project's models, "
                       "*capacity control*: an MLP as wide as the heads, without alignment; *baseline*: the classical "
                       "baselines.\n")
    records = sorted((r for r in real.get("best_versus") or [] if isinstance(r, dict)),
                     key=lambda r: str(r.get("level")))
    if records:
        best_rows = []
        for r in records:
            low, high = r.get("ci_low"), r.get("ci_high")
            wins, pairs = number(r.get("wins"), 0), number(r.get("pairs"), 0)
            best_rows.append([str(r.get("level", MISSING)), str(r.get("model", MISSING)), number(r.get("model_mean")),
                              str(r.get("baseline", MISSING)), number(r.get("baseline_mean")),
                              number(r.get("difference")), interval(low, high),
                              MISSING if MISSING in (wins, pairs) else f"{wins}/{pairs}", _verdict(low, high)])
        method = _methods(records)
        parts.append(markdown_table(["level", "best project model", "its macro-F1", "best baseline",
                                     "its macro-F1", "difference", "95 % interval", "project wins", "verdict"],
                                    best_rows, align=["l", "l", "r", "l", "r", "r", "r", "r", "l"])
                     + f"\nPer level, the project's model and the baseline with the highest mean macro-F1 on the "
                       f"test folds, paired over the same folds and seeds ({method or 'method not recorded'}). "
                       "*better*: the interval lies above 0; *worse*: below 0; *no clear difference*: it "
                       "includes 0.\n")
        parts.append(_aim_sentence(records))
    else:
        parts.append(_not_recorded("The best project model against the best baseline"))
    line = _crosswalk_line(real, [name for name, _ in _real_models(real)])
    if line:
        parts.append(line)
    return "\n".join(parts)


def capacity_table(outputs: dict[str, dict]) -> str:
    """Chapter 6's capacity control: the aligned models against the MLP as wide as the heads, and
    the MLP against raw concatenated, per level (paired difference, 95 % interval, wins, verdict
    recomputed from the interval). Says so when the run did not record it."""
    records = (outputs.get(REAL_NOTEBOOK) or {}).get("capacity_control") or []
    if not records:
        return _not_recorded("The capacity control of the real-data chapter")
    rows = []
    for r in records:
        low, high = r.get("ci_low"), r.get("ci_high")
        rows.append([str(r.get("level", MISSING)), f"{r.get('model', MISSING)} − {r.get('minus', MISSING)}",
                     number(r.get("model mean")), number(r.get("minus mean")), number(r.get("difference")),
                     interval(low, high), str(r.get("wins", MISSING)), _verdict(low, high)])
    return (markdown_table(["level", "difference of", "first", "second", "difference", "95 % interval", "wins",
                            "verdict"], rows, align=["l", "l", "r", "r", "r", "r", "r", "l"])
            + "\nMacro-F1 on real LUCAS land cover, paired over the same folds and seeds. *aligned − MLP*: what "
              "the contrastive objective adds over a supervised network as wide as the heads; *MLP − raw "
              "concatenated*: what the non-linear map alone adds.\n")


def qc_table(outputs: dict) -> str:
    """The location check on planted displacements (chapter 5 on the demo, chapter 6 on real LUCAS
    points): ROC-AUC and PR-AUC per score, block choice and distance, averaged over the recorded
    seeds, with the share of moved sites (the PR-AUC of a random ranking). Where a run has a single
    score, ``p_combined`` repeats it and is left out."""
    runs = [("demo (chapter 5)", (outputs.get("05_map_habitats", {}).get("qc") or {}).get("displacement")),
            ("LUCAS 2015 (chapter 6)", outputs.get("06_lucas_land_cover", {}).get("qc_displacement"))]
    runs = [(name, rows) for name, rows in runs if rows]
    if not runs:
        return _not_recorded("The location check")
    distances = sorted({float(r["distance_km"]) for _, rows in runs for r in rows})
    out = []
    for name, rows in runs:
        scored: dict[tuple, dict[float, list]] = {}
        for r in rows:
            if r["roc_auc"] is not None:                 # None: the score had no input (no image)
                scored.setdefault((r["blocks"], r["score"]), {}).setdefault(float(r["distance_km"]), []).append(r)
        scores = {score for _, score in scored}
        for (blocks, score), by_distance in scored.items():
            if score == "p_combined" and len(scores - {"p_combined", "random", "nearest_same_label_km"}) < 2:
                continue
            cells = []
            for d in distances:
                found = by_distance.get(d)
                if not found:
                    cells.append(number(None))
                    continue
                mean = {k: sum(r[k] for r in found) / len(found) for k in ("roc_auc", "pr_auc", "prevalence")}
                cells.append(f"{number(mean['roc_auc'])} / {number(mean['pr_auc'])} ({number(mean['prevalence'], 2)})")
            out.append([name, blocks, score] + cells)
    return markdown_table(["data", "blocks", "score"] + [f"{d:g} km: ROC-AUC / PR-AUC (share moved)" for d in distances],
                          out)


def results_fragments(outputs_dir: str | Path) -> dict[str, str]:
    """Every fragment of the results chapter, ``{file stem: Markdown}``, from ``outputs_dir``."""
    outputs = load_outputs(outputs_dir)
    align = outputs["03_contrastive_alignment"]
    classify = outputs["04_classify_habitats"]
    fragments = {
        "run": run_table(outputs),
        "claim": claim_table(classify),
        "comparisons": comparisons_table(classify),
        "every_site": every_site_table(classify),
        "choices": choices_table(classify),
        "macro_f1": macro_f1_table(classify),
        "macro_f1_photo_sites": macro_f1_table(classify, "models_on_photo_sites"),
        "reference": reference_table(outputs),
        "label_efficiency": label_efficiency_table(classify),
        "any_modality": any_modality_table(classify),
        "environment": environment_table(classify),
        "ablation": ablation_table(align),
        "retrieval": retrieval_table(align),
        "map": map_table(outputs["05_map_habitats"]),
        "real_lucas": real_data_table(outputs),
        "real_capacity": capacity_table(outputs),
        "calibration": calibration_fragment(outputs),
        "qc": qc_table(outputs),
    }
    fragments |= {f"scores_level{k}": scores_table(classify, k) for k in LEVELS}
    return fragments


def results_markdown(outputs_dir: str | Path) -> str:
    """All fragments in one Markdown document (with a heading per fragment), e.g. for a quick look."""
    return "\n".join(f"## {name}\n\n{text}" for name, text in results_fragments(outputs_dir).items())


def write_results(outputs_dir: str | Path, results_dir: str | Path) -> list[Path]:
    """Write each fragment to ``results_dir/<name>.md``; return the paths written."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in results_fragments(outputs_dir).items():
        path = results_dir / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m habitat_helpers report`` (:data:`habitat_helpers.cli.COMMANDS`)."""
    parser.add_argument("outputs", nargs="?", default="build/outputs", help="folder of <notebook>/metrics.json")
    parser.add_argument("results", nargs="?", default="build/results", help="folder for the Markdown fragments")


def run(args: argparse.Namespace) -> int:
    """Write the fragments (:func:`write_results`) and print their paths."""
    for path in write_results(args.outputs, args.results):
        print(path)
    return 0
