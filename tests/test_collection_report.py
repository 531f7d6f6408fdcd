"""A picture of a collection: ``jsqa score ... --report report.html|md [--label mos]``."""

import base64
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jsqa_sb.cli import main
from jsqa_sb.serving.collection_report import ReportError, read_labels, write_report


@pytest.fixture
def labelled(speech, tmp_path):
    """Six recordings (one corrupt) and a CSV listing them with a ``mos`` column."""
    audio, sr = speech
    rng = np.random.default_rng(0)
    folder = tmp_path / "recs"
    folder.mkdir()
    rows = []
    for i in range(5):
        noisy = audio + 0.02 * i * rng.standard_normal(audio.size).astype(np.float32)
        sf.write(folder / f"r{i}.wav", 0.5 * noisy / np.abs(noisy).max(), sr, subtype="PCM_16")
        rows.append({"path": f"recs/r{i}.wav", "mos": 4.5 - 0.5 * i})
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    rows.append({"path": "recs/broken.wav", "mos": 1.0})
    table = tmp_path / "list.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_html_report_of_a_labelled_collection(model_folder, labelled, tmp_path, capsys):
    report = tmp_path / "out" / "report.html"
    args = ["score", str(model_folder), str(labelled), "--out", str(tmp_path / "s.csv")]
    assert main([*args, "--no_progress", "--report", str(report), "--label", "mos"]) == 1
    assert f"Report: {report}" in capsys.readouterr().err
    text = report.read_text()
    scores = pd.read_csv(tmp_path / "s.csv")
    good = scores[scores["error"].isna()]["mos"]
    # Counts, failures, statistics.
    assert re.search(r"<td>files</td><td>6</td>", text)
    assert re.search(r"<td>scored</td><td>5</td>", text)
    assert re.search(r"<td>failed</td><td>1</td>", text) and "broken.wav" in text
    stats = f"<td>mos</td><td>5</td><td>{good.mean():.3f}</td><td>{good.median():.3f}</td>"
    assert stats + f"<td>{good.std(ddof=1):.3f}</td>" in text
    # The worst and best files, by MOS.
    worst = text.index("worst files")
    best = text.index("best files")
    lowest = scores.loc[good.idxmin(), "path"]
    assert worst < text.index(lowest, worst) < best
    # Labels: metrics and the scatter plot, figures embedded as PNG.
    assert "Against the label mos" in text and "<th>PCC</th>" in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2  # the histogram and the scatter plot
    assert all(base64.b64decode(image)[:4] == b"\x89PNG" for image in images)


def test_markdown_report_writes_its_figures_beside_it(model_folder, labelled, tmp_path):
    report = tmp_path / "report.md"
    args = ["score", str(model_folder), str(labelled), "--out", str(tmp_path / "s.json")]
    main([*args, "--no_progress", "--report", str(report)])
    text = report.read_text()
    assert "| mos | 5 |" in text and "Against the label" not in text
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures == ["report_files/hist_mos.png"]
    assert (tmp_path / figures[0]).read_bytes()[:4] == b"\x89PNG"


def test_metrics_match_mos_metrics(tmp_path):
    from jsqa_sb.evaluation.mos_metrics import pcc, rmse, srcc

    frame = pd.DataFrame(
        {
            "path": [f"/d/{i}.wav" for i in range(6)],
            "mos": [1.5, 2.0, 2.4, 3.9, 4.1, 3.0],
            "error": [""] * 5 + ["bad file"],
        }
    )
    labels = {f"/d/{i}.wav": v for i, v in enumerate([1.0, 2.5, 2.0, 4.5, 4.0, 3.0])}
    report = write_report(frame, ["mos"], tmp_path / "r.md", labels=labels, label_name="mos")
    text = report.read_text()
    true, pred = [1.0, 2.5, 2.0, 4.5, 4.0], [1.5, 2.0, 2.4, 3.9, 4.1]
    row = f"| 5 | {pcc(true, pred):.3f} | {srcc(true, pred):.3f} | {rmse(true, pred):.3f} |"
    assert row in text


@pytest.mark.parametrize(
    "cells, expected",
    [
        (None, "has no column 'mos'; its columns are: path"),
        (["4.5", "good"], "column 'mos' of"),
        (["4.5", "nan"], "line 3: 'nan'"),
    ],
)
def test_label_column_missing_or_not_numeric_is_named(tmp_path, cells, expected):
    table = pd.DataFrame({"path": ["a.wav", "b.wav"]})
    if cells is not None:
        table["mos"] = cells
    table.to_csv(tmp_path / "list.csv", index=False)
    with pytest.raises(ReportError, match=re.escape(expected)):
        read_labels([tmp_path / "list.csv"], "mos")


def test_bad_report_or_label_options_stop_before_scoring(model_folder, labelled, tmp_path, capsys):
    out = tmp_path / "s.csv"
    base = ["score", str(model_folder), str(labelled), "--out", str(out)]
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (["--report", str(tmp_path / "r.pdf")], "must end with .html or .md"),
        (["--report", str(tmp_path / "file.txt" / "r.html")], "cannot write in"),
        (["--report", str(tmp_path / "r.html"), "--label", "rating"], "no column 'rating'"),
        (["--label", "mos"], "--label goes with --report"),
    ]
    for extra, expected in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
        assert not out.exists()
