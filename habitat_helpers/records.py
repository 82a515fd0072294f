"""What each chapter keeps: one function per notebook writes its ``metrics.json`` from the
results the notebook computed.

The keys written here are the ones :mod:`habitat_helpers.report` reads back into the results
chapter and the model card, and the ones the built-book checks read: one place says what a
chapter records, so a notebook ends with a single call, e.g.

>>> hh.records.write_classification(OUTPUT_DIR, run, cv, ...)  # doctest: +SKIP

``run`` is :func:`run_info`: the profile, seed, data and label scheme every chapter records.
Numbers are made plain JSON by :func:`habitat_helpers.metrics.write_metrics` (NaN -> null).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import labels
from .datasets import MODALITIES
from .evaluation import PHOTO_SITES, TRANSFER_MODELS, summary_json
from .metrics import write_metrics


def run_info(profile: str, seed: int, data=None, scheme=None, **more) -> dict:
    """The keys every chapter records: ``profile, seed``, and with ``data`` (a
    :class:`habitat_helpers.dataspec.Data`) its name and whether it is synthetic, with ``scheme``
    the label scheme's name; ``more`` is added as it is."""
    out = {"profile": profile, "seed": seed}
    if data is not None:
        out |= {"data": data.name, "synthetic": bool(data.synthetic)}
    if scheme is not None:
        out["label_scheme"] = labels.get(scheme).name
    return out | more


def _by_level(table: pd.DataFrame, label: str) -> dict:
    """``{row: {"level<k>": {"mean", "std"}}}`` of a summary-shaped table's ``label`` column."""
    out = {}
    for (row, level), r in table[label].iterrows():
        out.setdefault(row, {})[f"level{level}"] = {"mean": float(r["mean"]), "std": float(r["std"])}
    return out


def _choices(cv) -> dict:
    return {f"{model} | {setting}": int(n) for (model, setting), n in cv.choice_counts(1.0).items()}


def write_exploration(out_dir, run: dict, data, scheme, *, has_modality: pd.DataFrame, ceiling,
                      agreement: pd.DataFrame, spatial_range, auto_block_size_deg) -> dict:
    """Chapter 1: the sites per source, the labels per level, the ceilings of the demo and how
    far labels agree in space."""
    sites, scheme = data.sites, labels.get(scheme)
    metrics = run | {
        "n_sites": len(sites),
        "n_sites_by_source": sites["source"].value_counts().to_dict(),
        "ceiling_accuracy": ceiling,
        "load_reports": data.report.to_dict(orient="index"),
        "n_with_photos": int(has_modality["ground photo"].sum()),
        "n_with_satellite": int(has_modality["satellite patch"].sum()),
        "n_labelled": {f"level{k}": int(sites[f"label_l{k}"].notna().sum()) for k in (1, 2, 3)},
        "n_classes": {f"level{k}": int(sites[f"label_l{k}"].nunique()) for k in (1, 2, 3)},
        "codes_per_level": {str(k): len(scheme.codes(k)) for k in scheme.levels},
        "label_agreement_nearest_bin": float(agreement["agreement"].dropna().iloc[0]),
        "label_agreement_chance": float(agreement["chance"].iloc[0]),
        "autocorrelation_range_km": None if spatial_range is None else spatial_range.range_km,
        "auto_block_size_deg": auto_block_size_deg,
    }
    write_metrics(out_dir, metrics)
    return metrics


def write_embeddings(out_dir, run: dict, data, embeddings: dict, *, image_encoder, location_encoder, n_images: int,
                     seconds: float, knn_probe: pd.DataFrame, probes=None, calibration=None,
                     demo_ceilings=None) -> dict:
    """Chapter 2: the encoders, the embeddings' sizes and coverage, the k-NN probe and the
    calibration of the demo's synthetic inputs (``None`` on other data)."""
    present = {m: ~np.isnan(embeddings[m][:, 0]) for m in MODALITIES}
    metrics = run | {
        "image_encoder": image_encoder.name,
        "location_encoder": location_encoder.name,
        "dims": {m: int(embeddings[m].shape[-1]) for m in MODALITIES},
        "n_sites": len(data.sites),
        "n_sites_with": {m: int(p.sum()) for m, p in present.items()},
        "n_images": n_images,
        "seconds": round(seconds, 2),
        "calibration_probes": None if calibration is None else probes.to_dict(orient="records"),
        "demo_ceilings": demo_ceilings,
        "calibration": None if calibration is None else calibration.to_dict(orient="records"),
        "knn_probe_level1": {f"{m} | {e}": float(v) for (m, e), v in knn_probe["level 1 accuracy"].items()},
        "all_finite": bool(all(np.isfinite(embeddings[m][present[m]]).all() for m in MODALITIES)),
    }
    write_metrics(out_dir, metrics)
    return metrics


def _keyed(retrieval: pd.DataFrame, stage: str) -> dict:
    table = retrieval[retrieval["stage"] == stage].set_index("pair").drop(columns=["stage"])
    return table.rename(index=lambda p: p.replace(" → ", "_to_")).to_dict(orient="index")


def write_alignment(out_dir, run: dict, model, history: pd.DataFrame, split: np.ndarray, *, radius_km: float,
                    neighbours: pd.DataFrame, retrieval: pd.DataFrame, ablation: pd.DataFrame) -> dict:
    """Chapter 3: the split, the training history, the neighbour sampler, retrieval before and
    after (:func:`habitat_helpers.align.retrieval_table`) and the ablation."""
    metrics = run | {
        "radius_km": radius_km,
        **{f"n_{s}": int((split == s).sum()) for s in ("train", "val", "test")},
        "best_epoch": history.attrs["best_epoch"],
        "epochs_run": int(history["epoch"].max()),
        "val_loss_initial": float(history["val_loss"].iloc[0]),
        "val_loss_best": float(history["val_loss"].min()),
        "val_recall_initial": float(history["val_recall"].iloc[0]),
        "val_recall_best": float(history["val_recall"].max()),
        "temperature_final": float(model.temperature().detach()),
        "neighbours": neighbours.reset_index().to_dict(orient="records"),
        "retrieval_after": _keyed(retrieval, "after"),
        "retrieval_before": _keyed(retrieval, "before"),
        "retrieval_habitat_only": _keyed(retrieval, "knowing the true habitat only"),
        "ablation": ablation.reset_index().to_dict(orient="records"),
    }
    write_metrics(out_dir, metrics)
    return metrics


def write_classification(out_dir, run: dict, cv, protocol, *, block_size: float, block_rule: dict,
                         radius_km: float, ceiling, consistent: bool, every=None, env_table=None,
                         env_covariates=(), env_features=(), env_report=None) -> dict:
    """Chapter 4: the protocol, every model's scores, the comparisons, the claim (with all labels
    and with fewer), the photo transfer, the label efficiency, the any-modality runs and, when
    given, the every-site-labelled run (``every``, a second result) and the environment table
    (``env_table``, :func:`habitat_helpers.evaluation.gather`)."""
    transfer = [m for m in cv.predictions if m.startswith("transfer")]
    summary = cv.summary().drop(index=transfer, level="model", errors="ignore")
    best = cv.best_mono_scale()
    photo = cv.summary(PHOTO_SITES)
    shown = [m for m in TRANSFER_MODELS if m in photo.index.unique("model")]
    eff = cv.label_efficiency()["macro_f1"]["mean"]
    any_modality = cv.any_modality_table("macro_f1").rename(columns=lambda k: k.replace("macro-F1 ", ""))
    metrics = run | {
        "seeds": list(protocol.seeds),
        "folds": protocol.folds,
        "block_size_deg": block_size,
        "block_size_rule": block_rule,
        "buffer_km": protocol.buffer_km,
        "grids": cv.settings["grids"],
        "choices": _choices(cv),
        "comparisons": cv.comparisons("aligned", [m for m in summary.index.unique("model") if m != "aligned"])
                         .to_dict(orient="records"),
        "transfer_macro_f1": _by_level(photo.loc[shown], "macro_f1"),
        "transfer_comparisons": [
            {k: v for k, v in cv.compare(shown[0], b, lv, subset=PHOTO_SITES).items() if k != shown[0]}
            for b in shown[1:] for lv in (2, 3)],
        "label_fractions": list(protocol.label_fractions),
        "radius_km": radius_km,
        "ceiling_accuracy_from_location": ceiling,
        "hierarchy_consistent": consistent,
        "best_mono_scale": best,
        "models": summary_json(summary),
        "models_on_photo_sites": summary_json(photo),
        "claim": cv.claim("aligned", best, fractions=protocol.label_fractions).to_dict(orient="records"),
        "every_site_labelled": None if every is None else {
            "best_mono_scale": every.best_mono_scale(),
            "models": summary_json(every.summary()),
            "claim": every.claim("aligned", every.best_mono_scale()).to_dict(orient="records")},
        "label_efficiency_macro_f1": {f"{m} | level{lv} | {fr:g}": float(v)
                                      for (m, lv, fr), v in eff.items() if not np.isnan(v)},
        "any_modality_macro_f1": {f"{inputs} | {model}": {k.replace(" ", ""): float(v) for k, v in row.items()}
                                  for (inputs, model), row in any_modality.iterrows()},
        "env_covariates": list(env_covariates),
        "env_features": list(env_features),
        "env_missing": None if env_report is None else dict(env_report.missing),
        "env_comparison_macro_f1": None if env_table is None else _by_level(env_table, "macro_f1"),
    }
    write_metrics(out_dir, metrics)
    return metrics


def write_maps(out_dir, run: dict, grid: pd.DataFrame, predictions: pd.DataFrame, *, resolution_deg: float,
               bbox, seconds: float, held_out: dict, geotiffs: dict, consistent: bool, qc: dict) -> dict:
    """Chapter 5: the map's cells, its uncertainty, the GIS files and the location check (``qc``,
    recorded as given)."""
    metrics = run | {
        "n_cells": len(grid),
        "resolution_deg": resolution_deg,
        "bbox": list(bbox),
        "seconds_predict": round(seconds, 2),
        "held_out_gps_only": held_out,
        "mean_entropy_l3": float(predictions["entropy_l3"].mean()),
        "mean_p_l3": float(predictions["p_l3"].mean()),
        "level1_share": predictions["label_l1"].value_counts(normalize=True).to_dict(),
        "geotiffs": {f"level{k}": sorted(Path(p).name for p in v.values()) for k, v in geotiffs.items()},
        "hierarchy_consistent": consistent,
        "qc": qc,
    }
    write_metrics(out_dir, metrics)
    return metrics


def write_real_data(out_dir, run: dict, cv, *, points: pd.DataFrame, n_sites: int, block_size: float,
                    block_rule: dict, radius_km: float, project, control, baselines, crosswalk: dict,
                    map_record: dict, qc_displacement: pd.DataFrame, seconds: dict) -> dict:
    """Chapter 6 (real LUCAS points): every model's scores, the best project model against the best
    classical baseline, the capacity control, the level-1 scores mapped to EUNIS, the map and the
    displacement experiment."""
    order = [*project, *control, *baselines]
    metrics = run | {
        "attribution": points.attrs.get("attribution"),
        "seeds": list(cv.settings["seeds"]),
        "folds": int(cv.settings["folds"]),
        "n_points": len(points),
        "n_sites": n_sites,
        "block_size_deg": block_size,
        "block_size_rule": block_rule,
        "radius_km": radius_km,
        "models": summary_json(cv.summary()),
        "project_models": list(project),
        "control_models": list(control),
        "baseline_models": list(baselines),
        "best_versus": cv.best_versus(project, baselines).to_dict(orient="records"),
        "capacity_control": cv.capacity(control[0]).to_dict(orient="records"),
        "choices": _choices(cv),
        # EUNIS level 1 through the crosswalk (the key names the scheme, not a table column)
        "eunis_l1": {"crosswalk": crosswalk, "macro_f1": {m: cv.mapped_macro_f1(m, 1, crosswalk) for m in order}},
        "map": map_record,
        "qc_displacement": qc_displacement.to_dict(orient="records"),
        "seconds": seconds,
    }
    write_metrics(out_dir, metrics)
    return metrics

