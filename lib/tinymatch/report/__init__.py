"""The report: a papermill pipeline over parameterised notebooks, rendered to HTML and PDF.

One job per module:

| module | job |
|---|---|
| `pipeline` | `run_report` (papermill runs notebooks 01..04 + report.ipynb into the run directory), `publish` |
| `notebook` | `setup` and the other small helpers the notebooks call (data, training, facts, projector) |
| `inputs` | run directory -> the inputs of `tinymatch.plots` (ROC, confusion, histograms, retrieval, history) |
| `tables` | numbered figures, number formatting, the Markdown tables |
| `text` | the report's prose around the numbers, one function per section |
| `errors` | the error-analysis part: `error_analysis.json` and its figures (notebook 03), its tables and prose |
| `ablation` | the ablation part: mean +- sd tables from an ablation directory's `ablation.json` |
| `study` | the tuning-study part: search space, best trials and Optuna's figures from a study directory |
| `render` | executed notebook -> self-contained HTML (MathML, no CDN) -> PDF (headless Chromium) |

The names below are the package's public API (what the notebooks, the CLI and the tests use).
"""

from tinymatch.report.inputs import (MODEL_LABELS, confusion_inputs, distance_axis_label, evaluation_arrays,
                                     histogram_inputs, history_arrays, operating_point, protocols_in, retrieval_inputs,
                                     roc_inputs, run_history, training_history)
from tinymatch.report.notebook import (augmentation_layer, data_facts, default_run_dir, export_projection,
                                       labelled_indices, load_data, model_facts, prepare_data,
                                       projection_sample, save_data_facts, screenshot_projector, setup,
                                       split_part_labels, train_or_reuse)
from tinymatch.report.pipeline import (NOTEBOOKS, default_notebooks_dir, execute_notebook, notebook_parameters,
                                       publish, run_report)
from tinymatch.report.render import (CHROMIUM_ENV_VAR, CHROMIUM_NAMES, ChromiumNotFoundError, ReportError,
                                     add_table_of_contents, external_resources, find_chromium, latex_to_mathml,
                                     markdown_to_html, render_html, render_pdf)
from tinymatch.report.ablation import ablation_markdown, ablation_tables
from tinymatch.report.errors import analyse_and_draw, error_analysis_markdown
from tinymatch.report.study import save_study_figures, study_facts, study_markdown
from tinymatch.report.tables import (ERROR_FIGURES, FIGURES, LOSS_NAMES, OPTIONAL_FIGURES, PALETTE_FIGURES,
                                     PROJECTOR_SCREENSHOTS, STUDY_FIGURES, UNSEEN_RETRIEVAL_FIGURE, absent_tables, palette_png,
                                     PROTOCOL_NAMES, TABLE_NUMBERS, TABLES, Figures, Tables,
                                     chance_precision_at_1, chance_recall_at_k, config_table, confusion_table,
                                     figure_markdown, fmt, history_summary, layer_table, loss_comparison_table,
                                     markdown_table, percent, phase_summary, phase_table, projector_table,
                                     retrieval_table, split_table, table_markdown, transfer_table,
                                     verification_table)
from tinymatch.report.text import (IMAGENET_OVERLAP_CAVEAT, REFERENCES, architecture_markdown,
                                   augmentation_markdown, backbone_markdown, bibliography_markdown,
                                   budget_sentence, cite, class_distribution_caption, conclusion_markdown,
                                   config_markdown, confusion_markdown, dataset_markdown, embedding_map_caption,
                                   introduction_summary, key_numbers, loss_comparison_markdown, loss_markdown,
                                   mining_markdown, optimisation_markdown, phase_auc_sentences, projector_markdown,
                                   repeat_runs, report_title, reproducibility_markdown, rerender_command,
                                   retrieval_chance, retrieval_markdown, seed_spread_sentence, split_markdown, stage_seconds, title_block,
                                   threshold_markdown, training_curves_caption, training_markdown, training_recipe,
                                   transfer_markdown, verification_markdown)
from tinymatch.rundir import read_run

__all__ = [
    # pipeline and rendering
    "run_report", "publish", "NOTEBOOKS", "default_notebooks_dir", "notebook_parameters", "execute_notebook",
    "render_html", "render_pdf", "markdown_to_html", "latex_to_mathml", "external_resources", "find_chromium",
    "add_table_of_contents",
    "ReportError", "ChromiumNotFoundError", "CHROMIUM_ENV_VAR", "CHROMIUM_NAMES",
    # notebook helpers
    "setup", "default_run_dir", "prepare_data", "load_data", "data_facts",
    "split_part_labels", "save_data_facts", "labelled_indices", "augmentation_layer", "train_or_reuse", "model_facts",
    "projection_sample", "export_projection", "screenshot_projector", "read_run",
    # plot inputs
    "MODEL_LABELS", "protocols_in", "evaluation_arrays", "roc_inputs", "operating_point", "confusion_inputs",
    "histogram_inputs", "distance_axis_label", "retrieval_inputs", "history_arrays", "run_history", "training_history",
    # tables and text
    "FIGURES", "Figures", "figure_markdown", "markdown_table", "fmt", "percent", "PROTOCOL_NAMES", "LOSS_NAMES",
    "verification_table", "retrieval_table", "confusion_table", "loss_comparison_table", "config_table",
    "split_table", "layer_table", "projector_table", "history_summary", "transfer_table", "TABLES", "Tables",
    "TABLE_NUMBERS", "table_markdown", "chance_precision_at_1", "chance_recall_at_k", "phase_summary",
    "phase_table",
    "key_numbers", "title_block", "introduction_summary", "architecture_markdown", "loss_markdown",
    "mining_markdown", "dataset_markdown", "split_markdown", "augmentation_markdown", "optimisation_markdown",
    "training_markdown", "verification_markdown", "confusion_markdown", "retrieval_markdown",
    "loss_comparison_markdown", "transfer_markdown", "IMAGENET_OVERLAP_CAVEAT", "projector_markdown",
    "config_markdown", "report_title", "training_recipe", "phase_auc_sentences", "budget_sentence",
    "backbone_markdown", "class_distribution_caption", "training_curves_caption", "retrieval_chance",
    "embedding_map_caption", "stage_seconds", "rerender_command", "reproducibility_markdown",
    "conclusion_markdown", "repeat_runs", "seed_spread_sentence", "threshold_markdown", "REFERENCES", "cite",
    "bibliography_markdown", "OPTIONAL_FIGURES", "ERROR_FIGURES", "STUDY_FIGURES", "PROJECTOR_SCREENSHOTS",
    "absent_tables", "palette_png", "PALETTE_FIGURES", "UNSEEN_RETRIEVAL_FIGURE",
    # the optional parts: error analysis, ablation, tuning study
    "analyse_and_draw", "error_analysis_markdown", "ablation_markdown", "ablation_tables",
    "save_study_figures", "study_facts", "study_markdown",
]
