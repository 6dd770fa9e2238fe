import json

from saesteer.config import load_config
from saesteer.tables import grid_table, to_markdown
from tests.helpers import REPO


def test_table_reads_each_cell_and_marks_missing_ones(tmp_path):
    config = load_config(REPO / "config/config.yaml", [REPO / "config/demo.yaml"])
    cell = tmp_path / "smollm2-135m" / "gated" / "l0-40"
    cell.mkdir(parents=True)
    (cell / "train_summary.json").write_text(json.dumps({"achieved_l0": 41.5, "explained_variance": 0.7}))
    (cell / "interp.json").write_text(
        json.dumps({"core": {"ce_loss_score": 0.8}, "sparse_probing": {"mean": {"sae_top_k_test_accuracy": {"1": 0.9}}}})
    )
    frame = grid_table(config, tmp_path)
    assert len(frame) == 30
    row = frame[(frame.arch == "gated") & (frame.target_l0 == 40) & (frame.model == "smollm2-135m")].iloc[0]
    assert row.achieved_l0 == 41.5 and row.ce_loss_score == 0.8 and row.probe_sae_k1 == 0.9
    assert frame.trained.sum() == 1 and frame.evaluated.sum() == 1
    text = to_markdown(frame, ["model", "arch", "target_l0", "achieved_l0"])
    assert "| smollm2-135m | gated | 40 | 41.500 |" in text
    assert "| smollm2-135m | relu | 20 |  |" in text
