"""Tests for the batch file model: JSONL items, TOML specs, errors and sample batches."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from pathlib import Path

import pytest

from abl_tui import batchfile
from abl_tui.batchfile import (
    BatchFileError,
    BatchItem,
    BatchSpec,
    iter_items,
    load_batch,
    validate_file,
)

SAMPLES = Path(__file__).resolve().parent.parent / "sample_batches"


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def line(obj: object) -> str:
    return json.dumps(obj) + "\n"


def error_of(fn, *args) -> BatchFileError:
    with pytest.raises(BatchFileError) as info:
        fn(*args)
    return info.value


# --- JSONL items: happy paths ---------------------------------------------------------


def test_items_with_contexts_of_every_json_type(tmp_path: Path) -> None:
    contexts = [{"a": [1, 2]}, [1, "x", None], "text", 42, 2.5, True, None]
    lines = [line({"id": f"i{n}", "prompt": f"p{n}", "context": c}) for n, c in enumerate(contexts)]
    lines.append(line({"id": "nocontext", "prompt": "p", "extra": "ignored"}))
    path = write(tmp_path / "b.jsonl", "".join(lines))

    items = list(iter_items(path))

    assert [i.context for i in items] == [*contexts, None]
    assert items[-1] == BatchItem(id="nocontext", prompt="p")
    assert not hasattr(items[-1], "extra")
    assert validate_file(path) == 8


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    text = "\n" + line({"id": "a", "prompt": "x"}) + "   \n\r\n" + '{"id": "b", "prompt": 5}\n'
    path = write(tmp_path / "b.jsonl", text)
    err = error_of(validate_file, path)
    assert (err.line, err.field) == (5, "prompt")


def test_crlf_bom_and_non_ascii_accepted(tmp_path: Path) -> None:
    text = '\ufeff{"id": "é", "prompt": "naïve ☃"}\r\n{"id": "b", "prompt": "ok"}'
    path = write(tmp_path / "b.jsonl", text)  # no final newline either
    assert [(i.id, i.prompt) for i in iter_items(path)] == [("é", "naïve ☃"), ("b", "ok")]


def test_iter_items_is_lazy(tmp_path: Path) -> None:
    path = write(tmp_path / "b.jsonl", line({"id": "a", "prompt": "x"}) + "not json\n")
    it = iter_items(path)
    assert next(it).id == "a"  # the bad second line is not read yet
    with pytest.raises(BatchFileError):
        next(it)


# --- JSONL items: errors --------------------------------------------------------------


def test_error_str_format(tmp_path: Path) -> None:
    good = "".join(line({"id": f"i{n}", "prompt": "x"}) for n in range(6))
    path = write(tmp_path / "batch.jsonl", good + line({"id": "i6", "prompt": 7}))
    err = error_of(validate_file, path)
    assert (err.path, err.line, err.field) == (path, 7, "prompt")
    assert err.message == "must be a string, got int"
    assert str(err) == f"{path}:7: field 'prompt': must be a string, got int"


def test_missing_file(tmp_path: Path) -> None:
    err = error_of(validate_file, tmp_path / "nope.jsonl")
    assert (err.line, err.field, err.message) == (None, None, "file not found")
    assert str(err) == f"{tmp_path / 'nope.jsonl'}: file not found"


def test_not_a_file(tmp_path: Path) -> None:
    err = error_of(validate_file, tmp_path)
    assert (err.line, err.message) == (None, "not a file")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    err = error_of(validate_file, write(tmp_path / "b.jsonl", text))
    assert err.line is None
    assert "no items" in err.message


def test_invalid_utf8_names_byte_offset(tmp_path: Path) -> None:
    path = write(
        tmp_path / "b.jsonl", line({"id": "a", "prompt": "x"}).encode() + b'{"id": "\xff"}\n'
    )
    err = error_of(validate_file, path)
    assert err.line == 2
    assert "invalid UTF-8 at byte offset 8" in err.message


def test_bad_json_says_what_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "b.jsonl", line({"id": "a", "prompt": "x"}) + '{"id": "b" "prompt": 1}\n'
    )
    err = error_of(validate_file, path)
    assert err.line == 2
    assert err.message == "invalid JSON: Expecting ',' delimiter (column 12)"


def test_unpaired_surrogate_escape_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "b.jsonl", '{"id": "a", "prompt": "bad \\ud800 text"}\n')
    err = error_of(validate_file, path)
    assert err.line == 1
    assert "unpaired surrogate" in err.message


@pytest.mark.parametrize(
    ("text", "kind"), [("[1, 2]", "array"), ('"hello"', "string"), ("3", "int"), ("null", "null")]
)
def test_line_not_an_object(tmp_path: Path, text: str, kind: str) -> None:
    err = error_of(validate_file, write(tmp_path / "b.jsonl", text + "\n"))
    assert (err.line, err.field) == (1, None)
    assert err.message == f"expected a JSON object, got {kind}"


@pytest.mark.parametrize(
    ("obj", "field", "message"),
    [
        ({"prompt": "x"}, "id", "missing (required)"),
        ({"id": 12, "prompt": "x"}, "id", "must be a string, got int"),
        ({"id": None, "prompt": "x"}, "id", "must be a string, got null"),
        ({"id": "  ", "prompt": "x"}, "id", "must not be blank"),
        ({"id": "a"}, "prompt", "missing (required)"),
        ({"id": "a", "prompt": ["x"]}, "prompt", "must be a string, got array"),
        ({"id": "a", "prompt": True}, "prompt", "must be a string, got boolean"),
    ],
)
def test_field_errors(tmp_path: Path, obj: dict, field: str, message: str) -> None:
    path = write(tmp_path / "b.jsonl", line({"id": "ok", "prompt": "x"}) + "\n" + line(obj))
    err = error_of(validate_file, path)
    assert (err.line, err.field, err.message) == (3, field, message)


def test_duplicate_id_names_first_line(tmp_path: Path) -> None:
    ids = ["a", "b", "c", "b"]
    path = write(tmp_path / "b.jsonl", "".join(line({"id": i, "prompt": "x"}) for i in ids))
    err = error_of(validate_file, path)
    assert (err.line, err.field) == (4, "id")
    assert err.message == "duplicate id 'b' (first seen on line 2)"


def test_digest_collision_is_not_a_duplicate(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(batchfile._DigestSet, "digest", staticmethod(lambda key: 99))
    path = write(tmp_path / "b.jsonl", "".join(line({"id": i, "prompt": "x"}) for i in "abc"))
    assert validate_file(path) == 3
    write(path, "".join(line({"id": i, "prompt": "x"}) for i in "abca"))
    assert error_of(validate_file, path).line == 4


def test_overlong_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(batchfile, "MAX_LINE_BYTES", 64)
    path = write(
        tmp_path / "b.jsonl",
        line({"id": "a", "prompt": "x"}) + line({"id": "b", "prompt": "y" * 100}),
    )
    err = error_of(validate_file, path)
    assert err.line == 2
    assert "line longer than" in err.message


def test_digest_set_grows_and_remembers() -> None:
    seen = batchfile._DigestSet()
    keys = [f"id-{n}" for n in range(20_000)]
    assert all(seen.add(k) for k in keys)
    assert not any(seen.add(k) for k in keys)


def test_big_file_streams_with_bounded_memory(tmp_path: Path) -> None:
    n, bound = 200_000, 16 * 1024 * 1024
    prompt = "Classify this product listing carefully. " * 5
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(line({"id": f"item-{i:07d}", "prompt": f"{prompt}#{i}", "context": {"n": i}}))

    # Check the bound itself: holding all items would need far more than it.
    tracemalloc.start()
    held = list(itertools.islice(iter_items(path), 5_000))
    per_item = tracemalloc.get_traced_memory()[0] / len(held)
    tracemalloc.stop()
    del held
    assert per_item * n > 4 * bound

    tracemalloc.start()
    try:
        count = validate_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < bound, f"peak {peak / 1e6:.1f} MB"


# --- TOML specs -----------------------------------------------------------------------


def make_spec(tmp_path: Path, toml: str, items: str = "data/items.jsonl") -> Path:
    folder = tmp_path / "specs"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    write(folder / "data" / "items.jsonl", line({"id": "a", "prompt": "x"}))
    return write(folder / "run.toml", f'items = "{items}"\n' + toml)


def test_spec_items_path_is_relative_to_spec_folder(tmp_path: Path, monkeypatch) -> None:
    spec_path = make_spec(tmp_path, 'name = "n"\nworkers = 3\ntimeout = 5\nrpm = 60\n')
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    batch = load_batch(Path("specs/run.toml"))
    expected = Path("specs/data/items.jsonl")
    assert batch.items_path == expected
    assert batch.spec.items == str(expected)
    assert batch.spec_path == Path("specs/run.toml")
    assert (batch.spec.name, batch.spec.workers, batch.spec.timeout, batch.spec.rpm) == (
        "n",
        3,
        5,
        60,
    )
    assert validate_file(batch.items_path) == 1
    assert spec_path.exists()


def test_spec_defaults(tmp_path: Path) -> None:
    spec = load_batch(make_spec(tmp_path, "")).spec
    assert spec.model == "simulated/demo" and not spec.model_given  # a dry run's model only
    assert spec.transport == "auto"
    assert (spec.workers, spec.max_attempts, spec.timeout, spec.dry_run) == (8, 3, 60, False)
    assert spec.name is None and spec.api_base is None and spec.response_schema is None
    assert spec.completion_options == {}


def test_spec_absolute_items_path(tmp_path: Path) -> None:
    items = write(tmp_path / "elsewhere.jsonl", line({"id": "a", "prompt": "x"}))
    batch = load_batch(make_spec(tmp_path, "", items=items.as_posix()))
    assert batch.items_path == items


def test_spec_items_file_missing(tmp_path: Path) -> None:
    spec_path = make_spec(tmp_path, "workers = 2\n", items="missing.jsonl")
    err = error_of(load_batch, spec_path)
    assert (err.path, err.line, err.field) == (spec_path, 1, "items")
    assert err.message.startswith("file not found: ")
    assert err.message.endswith("missing.jsonl")


def test_spec_missing_items_key(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", "workers = 2\n")
    err = error_of(load_batch, path)
    assert (err.line, err.field, err.message) == (None, "items", "missing (required)")


def test_spec_unknown_key_named_with_hint(tmp_path: Path) -> None:
    path = make_spec(tmp_path, 'model = "x/y"\nwokers = 4\n')
    err = error_of(load_batch, path)
    assert err.line == 3
    assert err.message == "unknown key 'wokers' (did you mean 'workers'?)"


def test_spec_unknown_table_named(tmp_path: Path) -> None:
    path = make_spec(tmp_path, '\n[provider]\nkind = "x"\n')
    err = error_of(load_batch, path)
    assert err.line == 3
    assert "unknown key 'provider'" in err.message


def test_spec_refuses_api_key(tmp_path: Path) -> None:
    path = make_spec(tmp_path, 'model = "openai/gpt-4o-mini"\napi_key = "sk-123"\n')
    err = error_of(load_batch, path)
    assert (err.line, err.field) == (3, "api_key")
    assert "environment variable" in err.message
    assert "sk-123" not in str(err)


def test_spec_refuses_api_key_in_completion_options(tmp_path: Path) -> None:
    path = make_spec(tmp_path, '[completion_options]\ntop_p = 0.5\napi_key = "sk-1"\n')
    err = error_of(load_batch, path)
    assert (err.line, err.field) == (2, "completion_options.api_key")
    assert "environment variable" in err.message


@pytest.mark.parametrize(
    ("toml", "field", "message"),
    [
        ('workers = "8"', "workers", "must be an integer, got string"),
        ("workers = 2.5", "workers", "must be an integer, got float"),
        ("workers = 0", "workers", "must be >= 1, got 0"),
        ("timeout = true", "timeout", "must be a number, got boolean"),
        ("timeout = -1", "timeout", "must be > 0, got -1"),
        ("rpm = inf", "rpm", "must be a finite number"),
        ("model = 3", "model", "must be a string, got int"),
        ('model = " "', "model", "must not be blank"),
        ('dry_run = "yes"', "dry_run", "must be true or false, got string"),
        ('completion_options = "x"', "completion_options", "must be a table, got string"),
        ("max_response_mb = 0", "max_response_mb", "must be > 0, got 0"),
        ('max_response_mb = "8MB"', "max_response_mb", "must be a number, got string"),
    ],
)
def test_spec_bad_types(tmp_path: Path, toml: str, field: str, message: str) -> None:
    path = make_spec(tmp_path, f'name = "n"\n{toml}\n')
    err = error_of(load_batch, path)
    assert (err.path, err.line, err.field, err.message) == (path, 3, field, message)
    assert str(err) == f"{path}:3: field '{field}': {message}"


def test_max_response_mb_sets_the_strategys_answer_size_cap(tmp_path: Path) -> None:
    from abl_tui.settings import build_strategy, settings_from_stored, stored_settings

    default = load_batch(make_spec(tmp_path, 'model = "openai/gpt-4o-mini"\n')).spec
    assert default.max_response_mb == 8
    assert build_strategy(default).max_response_bytes == 8 * 1024 * 1024
    path = make_spec(tmp_path, 'model = "openai/gpt-4o-mini"\nmax_response_mb = 0.5\n')
    spec = load_batch(path).spec
    assert build_strategy(spec).max_response_bytes == 512 * 1024
    assert build_strategy(spec.merged(price_as="openai/gpt-4o-mini")).max_response_bytes == (
        512 * 1024
    )
    assert settings_from_stored(stored_settings(spec)).max_response_mb == 0.5  # a resume keeps it
    assert BatchSpec.model_validate({"items": "x", "max_response_mb": 2}).max_response_mb == 2


def test_spec_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = make_spec(tmp_path, 'name = "n"\nworkers = \n')
    err = error_of(load_batch, path)
    assert err.line == 3
    assert err.message.startswith("invalid TOML: ")
    assert "(column 11)" in err.message


def test_spec_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", b'name = "\xff"\n')
    err = error_of(load_batch, path)
    assert "invalid UTF-8" in err.message


def test_spec_missing_and_not_a_file(tmp_path: Path) -> None:
    assert error_of(load_batch, tmp_path / "none.toml").message == "file not found"
    (tmp_path / "dir.toml").mkdir()
    assert error_of(load_batch, tmp_path / "dir.toml").message == "not a file"


def test_spec_completion_options_and_inline_schema(tmp_path: Path) -> None:
    toml = (
        "[completion_options]\ntop_p = 0.9\nseed = 1\n"
        '[response_schema]\ntype = "object"\n[response_schema.properties.x]\ntype = "number"\n'
    )
    spec = load_batch(make_spec(tmp_path, toml)).spec
    assert spec.completion_options == {"top_p": 0.9, "seed": 1}
    assert spec.response_schema == {"type": "object", "properties": {"x": {"type": "number"}}}


def test_spec_response_schema_file(tmp_path: Path) -> None:
    path = make_spec(tmp_path, 'response_schema_file = "schema.json"\n')
    write(path.parent / "schema.json", json.dumps({"type": "object"}))
    spec = load_batch(path).spec
    assert spec.response_schema == {"type": "object"}
    assert spec.response_schema_file == str(path.parent / "schema.json")

    write(path.parent / "schema.json", "[1]")
    err = error_of(load_batch, path)
    assert err.field == "response_schema_file"
    assert "JSON object" in err.message

    path.write_text(path.read_text() + "[response_schema]\ntype = 'object'\n")
    assert "not both" in error_of(load_batch, path).message


# --- plain items files and overrides --------------------------------------------------


@pytest.mark.parametrize("name", ["my-batch.jsonl", "my-batch.json", "my-batch.txt"])
def test_plain_items_file_gets_default_spec(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, line({"id": "a", "prompt": "x"}))
    batch = load_batch(path)
    assert batch.items_path == path
    assert batch.spec_path is None
    assert batch.spec == BatchSpec(items=str(path), name="my-batch")


def test_plain_items_file_missing(tmp_path: Path) -> None:
    assert error_of(load_batch, tmp_path / "x.jsonl").message == "file not found"


def test_merged_applies_non_none_overrides() -> None:
    spec = BatchSpec(items="a.jsonl", name="n", model="openai/x", workers=4, rpm=100)
    merged = spec.merged(workers=16, model="openai/gpt-4o-mini", rpm=None, dry_run=True)
    assert (merged.workers, merged.model, merged.rpm, merged.dry_run) == (
        16,
        "openai/gpt-4o-mini",
        100,
        True,
    )
    assert (merged.name, merged.items) == ("n", "a.jsonl")
    assert spec.workers == 4  # the original is unchanged
    assert spec.merged() == spec


def test_merged_validates_overrides() -> None:
    spec = BatchSpec(items="a.jsonl", model="openai/x")
    err = error_of(lambda: spec.merged(workers=0))
    assert (err.field, err.message) == ("workers", "must be >= 1, got 0")
    with pytest.raises(TypeError, match="wrokers"):
        spec.merged(wrokers=3)


# --- the sample batches shipped in the repo -------------------------------------------


@pytest.mark.parametrize("spec_path", sorted(SAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_sample_batches_load_and_validate(spec_path: Path) -> None:
    batch = load_batch(spec_path)
    assert batch.spec.name
    assert batch.spec.model_given, f"{spec_path.name} names no model"
    assert batch.spec.merged().model == batch.spec.model
    assert batch.items_path.parent == SAMPLES
    assert validate_file(batch.items_path) >= 20


def test_sample_batches_exist() -> None:
    names = {p.name for p in SAMPLES.glob("*.toml")}
    expected = {"demo.toml", "structured.toml", "openai.toml", "anthropic.toml"}
    assert expected | {"local_server.toml"} <= names


def test_demo_prompts_share_a_long_prefix() -> None:
    prompts = [item.prompt for item in iter_items(SAMPLES / "demo.jsonl")]
    assert 250 <= len(prompts) <= 350
    columns = zip(*prompts, strict=False)  # stops at the shortest prompt
    shared = next(i for i, chars in enumerate(columns) if len(set(chars)) > 1)
    assert shared >= 600
    assert len({p[shared:] for p in prompts}) > 200  # the product part varies
    spec = load_batch(SAMPLES / "demo.toml").spec
    assert (spec.model, spec.workers, spec.max_attempts, spec.timeout) == (
        "simulated/demo",
        24,
        4,
        20,
    )


def test_structured_sample_schema() -> None:
    spec = load_batch(SAMPLES / "structured.toml").spec
    assert spec.model == "simulated/default"
    props = spec.response_schema["properties"]
    assert props["category"]["type"] == "string" and len(props["category"]["enum"]) >= 3
    assert props["confidence"]["type"] == "number"


@pytest.mark.parametrize(
    ("name", "model", "env"),
    [
        ("openai.toml", "openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic.toml", "anthropic/claude-haiku-4-5", "ANTHROPIC_API_KEY"),
        ("local_server.toml", "openai/", "OPENAI_API_KEY"),
    ],
)
def test_provider_samples(name: str, model: str, env: str) -> None:
    batch = load_batch(SAMPLES / name)
    assert batch.spec.model.startswith(model)
    # The demo's items without its simulator directives: a real provider gets clean prompts.
    assert batch.items_path.name == "catalogue.jsonl"
    prompts = [item.prompt for item in iter_items(batch.items_path)]
    assert len(prompts) >= 250 and not any("[[sim:" in prompt for prompt in prompts)
    assert env in (SAMPLES / name).read_text()
    if name == "local_server.toml":
        assert batch.spec.api_base == "http://127.0.0.1:8000/v1"


# --- issue 11: every setting is checked before a run is created -----------------------


def test_a_batch_that_names_no_model_is_refused_unless_dry_run(tmp_path: Path) -> None:
    items = write(tmp_path / "items.jsonl", line({"id": "a", "prompt": "x"}))
    spec = load_batch(items).spec
    err = error_of(
        spec.merged,
    )
    assert str(err) == f"{items}: {batchfile.NO_MODEL_MSG}"
    assert "--model" in err.message and "simulated/demo" in err.message
    assert spec.merged(dry_run=True).model == "simulated/demo"  # nothing is sent
    chosen = spec.merged(model="openai/gpt-4o-mini")
    assert chosen.model == "openai/gpt-4o-mini"
    assert chosen.merged(name="again").model == "openai/gpt-4o-mini"  # still given

    toml = load_batch(make_spec(tmp_path, "workers = 2\n"))
    err = error_of(toml.spec.merged)
    assert err.path == str(toml.spec_path) and err.message == batchfile.NO_MODEL_MSG
    named = load_batch(make_spec(tmp_path, 'model = "simulated/demo"\n')).spec
    assert named.model_given and named.merged().model == "simulated/demo"


def test_where_a_spec_came_from_does_not_change_its_equality(tmp_path: Path) -> None:
    items = write(tmp_path / "b.jsonl", line({"id": "a", "prompt": "x"}))
    assert load_batch(items).spec == BatchSpec(items=str(items), name="b")
    assert load_batch(items).spec != BatchSpec(items=str(items), name="c")


def test_toml_with_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = make_spec(tmp_path, 'model = "openai/x"\nworkers = 3\n')
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    spec = load_batch(path).spec
    assert (spec.model, spec.workers) == ("openai/x", 3)
    path.write_bytes(path.read_bytes() + b"wokers = 1\n")
    assert error_of(load_batch, path).line == 4  # line numbers unchanged by the mark


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ('[response_schema]\ntype = "objekt"', "type"),
        ('[response_schema]\ntype = "object"\nrequired = "x"', "required"),
        ('[response_schema]\ntype = "object"\n[response_schema.properties.x]\ntype = 5', "x/type"),
        (
            '[response_schema]\n"$schema" = "http://json-schema.org/draft-07/schema#"\n'
            "minLength = -1",
            "minLength",
        ),
    ],
)
def test_an_invalid_response_schema_is_refused(tmp_path: Path, toml: str, where: str) -> None:
    path = make_spec(tmp_path, f'model = "openai/x"\n{toml}\n')
    err = error_of(load_batch, path)
    assert (err.path, err.line, err.field) == (path, 3, "response_schema")
    assert err.message.startswith("not a valid JSON schema: ")
    assert where in err.message


def test_a_valid_schema_of_an_older_draft_is_accepted(tmp_path: Path) -> None:
    toml = (
        '[response_schema]\n"$schema" = "http://json-schema.org/draft-07/schema#"\n'
        'type = "object"\nrequired = ["x"]\n[response_schema.properties.x]\ntype = "string"\n'
    )
    assert load_batch(make_spec(tmp_path, toml)).spec.response_schema["required"] == ["x"]


def test_an_invalid_response_schema_file_is_refused(tmp_path: Path) -> None:
    path = make_spec(tmp_path, 'response_schema_file = "schema.json"\n')
    write(path.parent / "schema.json", json.dumps({"type": "object", "properties": []}))
    err = error_of(load_batch, path)
    assert err.field == "response_schema_file"
    assert "schema.json: not a valid JSON schema" in err.message and "properties" in err.message


def test_a_bad_schema_given_as_an_override_is_refused() -> None:
    spec = BatchSpec(items="a.jsonl", model="openai/x")
    err = error_of(lambda: spec.merged(response_schema={"type": 12}))
    assert err.field == "response_schema" and "not a valid JSON schema" in err.message


@pytest.mark.parametrize("key", sorted(batchfile.RESERVED_OPTIONS))
def test_completion_options_the_strategy_owns_are_refused(tmp_path: Path, key: str) -> None:
    value = "true" if key == "stream" else "3"
    path = make_spec(tmp_path, f'model = "openai/x"\n[completion_options]\n{key} = {value}\n')
    err = error_of(load_batch, path)
    assert (err.line, err.field) == (3, f"completion_options.{key}")
    assert err.message.startswith("set by abl, not a completion option: ")


def test_reserved_options_mirror_the_strategy() -> None:
    from async_batch_llm.providers import litellm as provider

    assert set(batchfile.RESERVED_OPTIONS) == set(provider._RESERVED_KWARGS)


@pytest.mark.parametrize("key", ["model", "api_base", "system_prompt", "response_schema"])
def test_completion_options_that_repeat_a_setting_are_refused(tmp_path: Path, key: str) -> None:
    path = make_spec(tmp_path, f'[completion_options]\n{key} = "x"\n')
    err = error_of(load_batch, path)
    assert (err.field, err.message) == (
        f"completion_options.{key}",
        f"use the top-level `{key}` setting instead",
    )


def test_response_format_and_response_schema_together_are_refused(tmp_path: Path) -> None:
    toml = (
        '[response_schema]\ntype = "object"\n'
        '[completion_options.response_format]\ntype = "json_object"\n'
    )
    err = error_of(load_batch, make_spec(tmp_path, toml))
    assert err.field == "completion_options.response_format" and "not both" in err.message
    path = make_spec(
        tmp_path,
        'response_schema_file = "s.json"\n[completion_options]\nresponse_format = "json"\n',
    )
    write(path.parent / "s.json", json.dumps({"type": "object"}))
    assert error_of(load_batch, path).field == "response_schema_file"


def test_an_unknown_simulator_profile_is_refused(tmp_path: Path) -> None:
    path = make_spec(tmp_path, 'model = "simulated/nope"\n')
    err = error_of(load_batch, path)
    assert (err.line, err.field) == (2, "model")
    assert "unknown simulator profile 'simulated/nope'" in err.message
    assert "demo" in err.message and "fast" in err.message
    flag = error_of(lambda: BatchSpec(items="a", model="openai/x").merged(model="simulated/x"))
    assert (flag.path, flag.field) == ("command-line options", "model")
    assert load_batch(make_spec(tmp_path, 'model = "simulated/chaos"\n')).spec.model_given


@pytest.mark.parametrize(
    "url",
    [
        "notaurl",
        "ftp://x",
        "http://",
        "/v1/chat",
        "localhost:8000",
        "http://host:99999/v1",
        "http://exa mple.com/v1",
        " http://127.0.0.1:8000/v1",
    ],
)
def test_an_api_base_that_is_not_an_http_url_is_refused(tmp_path: Path, url: str) -> None:
    path = make_spec(tmp_path, f'model = "openai/x"\napi_base = "{url}"\n')
    err = error_of(load_batch, path)
    assert (err.line, err.field) == (3, "api_base")
    flag = error_of(lambda: BatchSpec(items="a", model="openai/x").merged(api_base=url))
    assert (flag.path, flag.field) == ("command-line options", "api_base")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "https://api.example.com", "HTTPS://[::1]:8443/v1"]
)
def test_http_api_bases_are_accepted(url: str) -> None:
    assert BatchSpec(items="a", model="openai/x").merged(api_base=url).api_base == url


def test_credentials_in_an_api_base_are_refused_never_echoed(tmp_path: Path) -> None:
    toml = 'model = "openai/x"\napi_base = "https://me:Hunter2Secret@gw.example/v1"\n'
    err = error_of(load_batch, make_spec(tmp_path, toml))
    assert (err.line, err.field) == (3, "api_base")
    assert "credentials" in err.message and "Hunter2Secret" not in str(err)
    bad = error_of(lambda: BatchSpec(items="a", model="o/x").merged(api_base="ftp://u:Pw1234567@h"))
    assert "Pw1234567" not in str(bad) and "ftp://***@h" in str(bad)
    # On the command line too: the run's settings are stored, and the URL with them.
    flag = error_of(
        lambda: BatchSpec(items="a", model="o/x").merged(api_base="https://me:pw@gw/v1")
    )
    assert "credentials" in str(flag) and "me:pw" not in str(flag)


def test_transport_setting(tmp_path: Path) -> None:
    spec = load_batch(make_spec(tmp_path, 'model = "openai/x"\ntransport = "native"\n')).spec
    assert spec.transport == "native"
    assert spec.merged(transport="litellm").transport == "litellm"
    err = error_of(load_batch, make_spec(tmp_path, 'transport = "grpc"\n'))
    assert (err.line, err.field) == (2, "transport")
    assert err.message == "must be one of 'auto', 'native' or 'litellm', got 'grpc'"


def test_workers_have_a_sane_ceiling(tmp_path: Path) -> None:
    err = error_of(load_batch, make_spec(tmp_path, "workers = 1_000_000_000\n"))
    assert (err.field, err.message) == ("workers", "must be <= 10000, got 1000000000")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [65, 300, 1500, 200_000])
def test_a_context_nested_too_deeply_is_refused(tmp_path: Path, depth: int) -> None:
    good = line({"id": "ok", "prompt": "x", "context": json.loads(nested(64))})
    bad = '{"id": "deep", "prompt": "x", "context": ' + nested(depth) + "}\n"
    path = write(tmp_path / "b.jsonl", good + bad)
    err = error_of(validate_file, path)
    assert (err.line, err.field) == (2, "context")
    assert err.message == f"nested deeper than {batchfile.MAX_CONTEXT_DEPTH} levels"


def test_deep_json_outside_the_context_is_refused_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "b.jsonl", '{"id": "a", "prompt": "x", "meta": ' + nested(5000) + "}\n")
    err = error_of(validate_file, path)
    assert err.line == 1 and "nested deeper than" in err.message


def test_a_context_with_many_brackets_but_shallow_is_accepted(tmp_path: Path) -> None:
    context = {"rows": [[n, [n]] for n in range(500)], "code": "{[(" * 100}
    path = write(tmp_path / "b.jsonl", line({"id": "a", "prompt": "x", "context": context}))
    assert next(iter_items(path)).context == context
