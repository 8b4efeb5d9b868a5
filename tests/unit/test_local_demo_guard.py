from rich.console import Console

from ops.local import demo


def test_demo_says_clearly_which_handler_is_missing(monkeypatch):
    monkeypatch.setattr(
        demo,
        "DEFAULT_HANDLERS",
        {"merge": "services.not_here.handler:handler", "pause": "services.pause.handler:handler"},
    )
    console = Console(record=True, width=200)
    assert demo.run_demo(console) == 3
    text = console.export_text()
    assert "services.not_here" in text
    assert "Traceback" not in text
