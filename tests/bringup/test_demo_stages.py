"""`mail-il demo` skips a stage only when its settings and the code it runs are unchanged."""

from mail_policy_node.commands import demo


def test_code_digest_follows_the_stage_code(tmp_path, monkeypatch):
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "experts.py").write_text("SPEED = 0.1\n")
    (tmp_path / "spec.py").write_text("DT = 0.1\n")
    (tmp_path / "sim" / "notes.txt").write_text("not code")
    monkeypatch.setattr(demo, "PACKAGE", tmp_path)
    before = demo.code_digest(("sim", "spec.py"))
    assert demo.code_digest(("sim", "spec.py")) == before
    (tmp_path / "sim" / "notes.txt").write_text("still not code")
    assert demo.code_digest(("sim", "spec.py")) == before
    (tmp_path / "sim" / "experts.py").write_text("SPEED = 0.2\n")  # an expert change records demos again
    assert demo.code_digest(("sim", "spec.py")) != before


def test_stage_key_includes_the_code():
    demos = dict(task="reach", n=60, seed=0, code=demo.code_digest(demo.DEMOS_CODE))
    assert demo._stage_key(demos) == demo._stage_key(dict(demos))
    assert demo._stage_key(demos) != demo._stage_key({**demos, "code": demo.code_digest(demo.TRAIN_CODE)})
