import json

from typer.testing import CliRunner

from ops.cli import app

runner = CliRunner()


def test_validate_passes_sample_files_and_fails_a_bad_one(tmp_path):
    result = runner.invoke(app, ["sample", "--out", str(tmp_path), "--seed", "5"])
    assert result.exit_code == 0, result.output
    ok = runner.invoke(app, ["validate", "staff", str(tmp_path / "staff.json")])
    assert ok.exit_code == 0, ok.output
    assert "20 rows, 20 valid, 0 invalid" in ok.output

    rows = json.loads((tmp_path / "staff.json").read_text())
    rows[3]["email_address"] = None
    rows[4]["shoe_size"] = 9
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows))
    result = runner.invoke(app, ["validate", "staff", str(bad)])
    assert result.exit_code == 1
    assert (
        f"bad.jsonl[3] table staff key={rows[3]['staff_id']} field email_address" in result.output
    )
    assert "field shoe_size: unknown column" in result.output
    assert "20 rows, 18 valid, 2 invalid" in result.output


def test_validate_reports_a_broken_file_and_an_unknown_table(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    result = runner.invoke(app, ["validate", "staff", str(broken)])
    assert result.exit_code == 1
    assert "broken.json: not valid JSON" in result.output
    assert runner.invoke(app, ["validate", "nope", str(broken)]).exit_code == 2
