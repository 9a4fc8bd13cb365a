"""SDG: parsers and filters on scripted outputs (garbage included), a real run with the embedded SmolLM2
teacher, kill-and-resume equality with a real subprocess, the invalid-taxonomy error, datasets and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlxlab.sdg.chunking import chunk_text
from mlxlab.errors import MlxlabError
from mlxlab.prompts import extract, load_prompt, parse_score
from mlxlab.sdg.gates import rouge_l
from mlxlab.sdg.sdg import remove_near_duplicates
from mlxlab.sdg.sdg_units import Journal

ROOT = Path(__file__).resolve().parents[1]

FREEFORM = """\
version: 3
created_by: tester
task_description: Write a short haiku about the given subject.
seed_examples:
  - question: Write a haiku about the sea.
    answer: Waves fold into foam, salt wind carries gull voices, the tide keeps its time.
  - question: Write a haiku about autumn leaves.
    answer: Red leaves drift and fall, the maple lets go softly, paths turn into gold.
  - question: Write a haiku about a city at night.
    answer: Neon hums in rain, windows glow like sleepless eyes, taxis drift like fish.
  - question: Write a haiku about morning coffee.
    answer: Steam curls from the cup, bitter warmth wakes the quiet, the day starts to hum.
  - question: Write a haiku about a mountain.
    answer: Stone shoulders of snow, clouds rest on the silent peak, eagles trace the wind.
"""

KNOWLEDGE = """\
version: 3
created_by: tester
domain: astronomy
document_outline: Notes on the planet Mars.
seed_examples:
{examples}
document:
  repo: {repo}
  commit: main
  patterns:
    - "*.md"
"""

MARS = """\
# Mars

Mars is the fourth planet from the Sun. It has two small moons, Phobos and Deimos.

## Surface

The surface of Mars is red because of iron oxide dust. Olympus Mons, the largest volcano in the
solar system, stands on Mars.

## Atmosphere

The atmosphere of Mars is thin and made mostly of carbon dioxide.
"""


def _knowledge_examples() -> str:
    blocks = []
    for i in range(5):
        qas = "\n".join(f"""      - question: Question {i}.{j} about Mars, what is fact {j}?
        answer: Answer {i}.{j}, Mars fact number {j}.""" for j in range(3))
        blocks.append(f"""  - context: Mars context number {i} says Mars is red and has two moons.
    questions_and_answers:
{qas}""")
    return "\n".join(blocks)


def make_taxonomy(root: Path, *, knowledge: bool = False, broken: bool = False) -> Path:
    """A tiny valid taxonomy: one freeform skill leaf (and one knowledge leaf with a local document)."""
    leaf = root / "compositional_skills" / "writing" / "haiku"
    leaf.mkdir(parents=True)
    text = FREEFORM if not broken else FREEFORM.replace("task_description:", "task_descriptio:")
    (leaf / "qna.yaml").write_text(text)
    if knowledge:
        docs = root.parent / f"{root.name}-docs"
        docs.mkdir()
        (docs / "mars.md").write_text(MARS)
        kleaf = root / "knowledge" / "astronomy" / "mars"
        kleaf.mkdir(parents=True)
        (kleaf / "qna.yaml").write_text(KNOWLEDGE.format(examples=_knowledge_examples(), repo=docs))
    return root


# ---------------------------------------------------------------------------------------------- parsers

@pytest.mark.parametrize("text, expected", [
    ("[Start of Question]\nWhat is Jolie?\n[End of Question]", "What is Jolie?"),
    ("blah [start of question] lower case? [end of question] tail", "lower case?"),
    ("[ Start Of Question ]spaced[ End of Question ]", "spaced"),
    ("[Start of Question]\nno end tag here", "no end tag here"),
    ("**[Start of Question]** bold? **[End of Question]**", "bold?"),
    ("[Start of Question][End of Question]", None),
    ("", None),
    ("\x00\xff garbage ]]][[[", None),
])
def test_extract_is_tolerant(text, expected):
    assert extract(text, "Question") == expected


def test_extract_fallback_only_for_untagged_text():
    assert extract("Write a poem about tea.", "Question", fallback=True) == "Write a poem about tea."
    assert extract("[Start of Answer] x [End of Answer]", "Question", fallback=True) is None
    assert extract(None, "Question") is None


@pytest.mark.parametrize("text, allowed, expected", [
    ("Good question.\n[Start of Score]\n1\n[End of Score]", ("0", "1"), "1"),
    ("Score: 0", ("0", "1"), "0"),
    ("The rating is 3", ("1", "2", "3"), "3"),
    ("[Start of Score] 7 [End of Score]", ("1", "2", "3"), None),
    ("it is 1 or maybe 0", ("0", "1"), None),
    ("I think 2.5 out of 3", ("1", "2", "3"), "3"),
    ("[Start of Verdict]\nyes\n[End of Verdict]", ("YES", "NO"), "YES"),
    ("The answer is NOT supported. NO", ("YES", "NO"), "NO"),
    ("%%%%", ("0", "1"), None),
])
def test_parse_score(text, allowed, expected):
    assert parse_score(text, allowed, "Verdict" if "YES" in allowed else "Score") == expected


def test_prompts_render_every_role():
    from mlxlab.sdg.sdg import ROLES

    roles = ROLES
    assert {f"{r}.yaml" for r in roles} <= {p.name for p in (ROOT / "mlxlab" / "prompts").glob("*.yaml")}
    values = dict(task_description="T {with braces}", seed_question="SQ", seed_answer="SA", seed_context="SC",
                  context="C", question="Q", answer="A", context_block="", domain="D", document_outline="O",
                  examples="E", chunk="CH")
    for role in roles:
        prompt = load_prompt(role)
        messages = prompt.render(**values)
        assert [m["role"] for m in messages] == ["system", "user"]
        assert prompt.output and "{" not in messages[1]["content"].replace("{with braces}", "")


def test_rouge_l_and_dedup():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("", "x") == 0.0
    assert 0 < rouge_l("the cat sat", "a cat sat down") < 1
    texts = ["Write a haiku about the sea.", "write a HAIKU about the sea!", "Explain tides.", ""]
    assert remove_near_duplicates(texts, 0.7) == [0, 2]
    assert remove_near_duplicates(texts, 0.7, reference=["Explain tides"]) == [0]


def test_journal_ignores_torn_line_and_restarts_on_new_settings(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, "fp1")
    journal.add([{"unit": "a", "text": "x", "tokens": 1}])
    with open(path, "a") as handle:
        handle.write('{"unit": "b", "text": "torn')      # a SIGKILL in the middle of a write
    assert set(Journal(path, "fp1").records) == {"a"}
    assert not Journal(path, "fp1").restarted
    fresh = Journal(path, "fp2")
    assert fresh.records == {} and fresh.restarted       # other settings: the old work does not apply
    assert path.with_suffix(".jsonl.stale").exists()


def test_document_sections_become_questions_answered_by_their_text(tmp_path):
    from mlxlab.sdg.chunking import section_pairs

    doc = tmp_path / "mars.md"
    doc.write_text(MARS + "\n## Moons\n\nPhobos and Deimos are small,\nirregular moons that may be captured "
                   "asteroids; Phobos orbits\nvery close to the surface and is slowly spiralling inwards.\n\n"
                   "```\ncode stays as it is\n```\n\n" + "More text here. " * 80 + "\n")
    pairs = section_pairs([doc], max_words=60)
    topics = [p["source"] for p in pairs]
    assert topics == ["mars.md: Surface", "mars.md: Moons"]      # Atmosphere, under 20 words, is left out
    moons = pairs[1]
    assert "moons" in moons["question"] and "Mars" in moons["question"]
    assert moons["answer"].startswith("Phobos and Deimos are small, irregular moons")     # unwrapped
    assert "```\ncode stays as it is\n```" in moons["answer"] and "More text" not in moons["answer"]


def test_passages_cover_whole_documents_in_whole_paragraphs(tmp_path):
    from mlxlab.sdg.chunking import passages

    doc = tmp_path / "mars.md"
    doc.write_text(MARS + "\n## Moons\n\nMars has two moons, and both of them are small and\nirregular; "
                   "each one is listed here:\n\n- Phobos, the larger one, orbits very close to the planet\n"
                   "- Deimos\n\n" + "\n\n".join(f"Paragraph {i} about the moons of Mars has exactly twelve words "
                                                 "in it." for i in range(8)) + "\n")
    found = passages([doc], max_words=40)
    # short sections (the 15-word introduction, the 11-word Atmosphere) are passages too: nothing is left out
    assert [p["heading"] for p in found] == ["Mars", "Surface", "Atmosphere"] + ["Moons"] * 4
    assert found[1]["text"].startswith("The surface of Mars is red because of iron oxide dust. Olympus Mons")
    assert found[1]["source"] == "mars.md: Surface"
    # a paragraph ending in ':' stays with what it introduces, even past max_words; lists keep their lines
    assert found[3]["text"].endswith("each one is listed here:\n\n- Phobos, the larger one, orbits very close "
                                     "to the planet\n- Deimos")
    assert all(len(p["text"].split()) <= 40 for p in found[4:])
    assert sum(p["text"].count("Paragraph ") for p in found) == 8             # every paragraph, once


def test_chunking_keeps_headings_and_bounds():
    count = lambda t: len(t.split())
    doc = MARS + "\n## Long\n\n" + "dust " * 400
    chunks = chunk_text(doc, count, chunk_tokens=60, overlap_tokens=10, source="mars.md")
    assert all(c.tokens <= 70 for c in chunks)
    assert all(c.text.startswith("# Mars") for c in chunks)
    assert any("## Long" in c.text for c in chunks) and any("Olympus" in c.text for c in chunks)


# ---------------------------------------------------------------------------------------------- datasets

def _leaf_stub(tmp_path):
    from mlxlab.taxonomy.taxonomy import Taxonomy

    return Taxonomy.load(make_taxonomy(tmp_path / "tax", knowledge=True)).leaves


def test_datasets_from_scripted_samples(tmp_path):
    from mlxlab.config import GenerateConfig
    from mlxlab.sdg.datasets import split_seeds, stats, write_datasets

    leaves = _leaf_stub(tmp_path)
    kinds = {leaf.kind: leaf.name for leaf in leaves}
    skills = [{"unit": f"{i}/0", "question": f"Q{i}?", "answer": f"A{i}.", "leaf": kinds["freeform_skill"],
               "kind": "freeform_skill", "scores": {"pair": "3"}} for i in range(8)]
    knowledge = [{"unit": f"{i}/0", "question": f"KQ{i}?", "answer": f"KA{i}.", "chunk": f"chunk {i % 3}",
                  "leaf": kinds["knowledge"], "kind": "knowledge", "scores": {"faithful": "YES"}} for i in range(4)]
    replay = tmp_path / "replay.jsonl"
    replay.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"r{i}"},
                                                       {"role": "assistant", "content": "ok"}]}) + "\n"
                              for i in range(20)))
    cfg = GenerateConfig(valid_fraction=0.2, replay=str(replay), replay_ratio=0.5, distractors=2)
    documents = {kinds["knowledge"]: {"chunks": ["Mars is the fourth planet.", "Mars has two moons."],
                                      "sections": [{"question": "Explain the surface (Mars).",
                                                    "answer": "The surface of Mars is red.", "source": "mars.md"}]}}
    files = write_datasets(tmp_path / "out", leaves, {kinds["freeform_skill"]: skills,
                                                      kinds["knowledge"]: knowledge}, cfg, documents=documents)
    train, valid, test = stats(files["train"]), stats(files["valid"]), stats(files["test"])
    # 5 skill seeds and 15 knowledge Q&A: a fifth of each held out, a fifth of the rest validation
    assert test["by_leaf"] == {kinds["freeform_skill"]: 1, kinds["knowledge"]: 3}
    splits = {leaf.name: split_seeds(leaf, heldout_fraction=cfg.heldout_fraction, valid_fraction=0.2)
              for leaf in leaves}
    assert {k: len(v["valid"]) for k, v in splits.items()} == {kinds["freeform_skill"]: 1, kinds["knowledge"]: 2}
    assert train["by_source"]["seed"] == 3 + 10 and valid["by_source"]["seed"] == 1 + 2
    assert train["by_source"]["document"] == 1                          # the section, as a question and answer
    assert train["by_source"]["generated"] + valid["by_source"].get("generated", 0) == 12
    assert train["by_source"]["replay"] == round(0.5 * (train["records"] - train["by_source"]["replay"]))
    phase1 = [json.loads(line) for line in files["knowledge_phase1"].read_text().splitlines()]
    documents_in = [r for r in phase1 if r["metadata"]["source"] == "document" and "text" in r]
    assert [r["text"] for r in documents_in] == documents[kinds["knowledge"]]["chunks"]
    assert all(r["metadata"]["mask_prompt"] is False for r in documents_in)
    sections = [r for r in phase1 if r["metadata"]["source"] == "document" and "messages" in r]
    assert [r["messages"][1]["content"] for r in sections] == ["The surface of Mars is red."]
    # phase 1 keeps every leaf's training seeds next to the documents (they keep the model answering)
    assert {r["metadata"]["leaf"] for r in phase1 if r["metadata"]["source"] == "seed"} == set(kinds.values())
    generated1 = [r for r in phase1 if r["metadata"]["source"] == "generated"]
    assert generated1 and all(r["messages"][0]["content"].startswith("chunk") for r in generated1)
    mixed = [json.loads(line) for line in (files["train"].read_text() + files["valid"].read_text()).splitlines()]
    k2 = [r for r in mixed if r["metadata"].get("phase") == 2]
    assert all(r["messages"][0]["content"].count("Document ") == 3 for r in k2)   # chunk + 2 distractors
    # the held-out split: no test question in any training or validation file, no validation item in phase 1
    def questions(path):
        return {json.loads(line)["messages"][0]["content"] for line in path.read_text().splitlines()
                if "messages" in json.loads(line)}
    heldout = questions(files["test"])
    trained = questions(files["train"]) | questions(files["knowledge_phase1"])
    assert heldout and not heldout & (trained | questions(files["valid"]))
    assert not questions(files["valid"]) & trained
    # phase 1 trains every leaf's seeds, so it is validated on every leaf's validation seeds
    assert questions(tmp_path / "out" / "phase1" / "valid.jsonl") == questions(files["valid"])
    # a back-translated sample (the answer is a passage of the documents) is asked closed-book in both phases
    back = {"unit": "7/0", "question": "What colour is Mars?", "answer": "The surface of Mars is red.",
            "answer_from": "document", "leaf": kinds["knowledge"], "kind": "knowledge", "scores": {"likelihood": 1}}
    files = write_datasets(tmp_path / "back", leaves, {kinds["knowledge"]: [back]}, cfg, documents=documents)
    for path in (files["train"], files["knowledge_phase1"]):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["messages"] for r in rows if r["metadata"]["source"] == "generated"] == [[
            {"role": "user", "content": "What colour is Mars?"},
            {"role": "assistant", "content": "The surface of Mars is red."}]]
    # the split is stable: the same leaves give the same test set, whatever else changes
    again = write_datasets(tmp_path / "again", leaves, {}, dataclasses.replace(cfg, replay=None))
    assert again["test"].read_text() == files["test"].read_text()


def test_held_out_seeds_are_never_shown_to_the_teacher(tmp_path):
    from mlxlab.sdg import sdg
    from mlxlab.sdg.datasets import split_seeds

    teacher = FewshotTeacher()
    tax = make_taxonomy(tmp_path / "taxonomy", knowledge=True)
    result = sdg.generate_data(tax, teacher=teacher, output=tmp_path / "data", samples_per_seed=1, quiet=True,
                               allow_empty=True)
    leaves = sdg._load_taxonomy(str(tax)).leaves
    hidden = [it["question"] for leaf in leaves for name, items in split_seeds(
        leaf, heldout_fraction=0.2, valid_fraction=0.15).items() if name != "train" for it in items]
    assert hidden and teacher.prompts
    assert not [q for q in hidden if any(q in prompt for prompt in teacher.prompts)]
    assert len(result.test.read_text().splitlines()) == 1 + 3


def test_invalid_taxonomy_reports_validator_messages(tmp_path):
    from mlxlab.sdg.sdg import generate_data

    tax = make_taxonomy(tmp_path / "taxonomy", broken=True)
    with pytest.raises(MlxlabError) as info:
        generate_data(tax, output=tmp_path / "data")
    assert "qna.yaml:" in str(info.value) and "error" in str(info.value)
    cli = subprocess.run([sys.executable, "-m", "mlxlab", "generate", "--taxonomy", str(tax), "--output",
                          str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "qna.yaml:" in cli.stderr and "Traceback" not in cli.stderr


# ---------------------------------------------------------------------------------------------- real runs

SMALL = ["--samples-per-seed", "3", "--max-tokens", "24", "--judge-max-tokens", "8", "--batch-size", "2",
         "--allow-empty", "--quiet", "--seed", "3"]


def _journal_texts(out: Path) -> dict:
    texts = {}
    for path in sorted((out / ".journal").glob("*.jsonl")):
        for line in path.read_text().splitlines()[1:]:
            record = json.loads(line)
            texts[(path.name, record["unit"])] = (record["text"], record["tokens"])
    return texts


def _final(out: Path) -> dict:
    files = {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.rglob("*.jsonl"))
             if ".journal" not in p.parts}
    report = json.loads((out / "report.json").read_text())
    funnels = [(leaf["leaf"], leaf["stages"], leaf["kept"], leaf["tokens"]) for leaf in report["leaves"]]
    return {"files": files, "funnels": funnels, "journal": _journal_texts(out)}


@pytest.mark.slow
def test_small_real_run_with_embedded_teacher(smollm2_dir, tmp_path):
    from mlxlab.sdg.sdg import generate_data

    tax = make_taxonomy(tmp_path / "taxonomy", knowledge=True)
    result = generate_data(tax, output=tmp_path / "data", samples_per_seed=1, max_tokens=32, judge_max_tokens=12,
                           batch_size=5, allow_empty=True, quiet=True, chunk_tokens=64, seed=1)
    report = json.loads(result.report.read_text())
    assert {leaf["kind"] for leaf in report["leaves"]} == {"freeform_skill", "knowledge"}
    assert report["methods"]["prompt_style"] == "fewshot" and report["methods"]["scorer"] == "likelihood"
    for leaf in report["leaves"]:
        # one attempt per training seed (3 of the skill's 5) or per document passage (the knowledge leaf's 3)
        assert leaf["stages"][0]["sent"] == 3 and leaf["tokens"] > 0
        assert [s["stage"] for s in leaf["stages"]] == ["fewshot" if leaf["kind"] == "freeform_skill" else
                                                        "questions", "gates", "likelihood"]
        for before, after in zip(leaf["stages"], leaf["stages"][1:]):
            assert after["sent"] == before["passed"]                  # each filter feeds the next
        assert leaf["kept"] == result.kept[leaf["leaf"]]
    for path in (result.train, result.valid, result.test):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
            assert record["metadata"]["leaf"] and record["metadata"]["kind"]
    assert len(result.test.read_text().splitlines()) == 1 + 3
    assert report["generated_tokens"] == sum(leaf["tokens"] for leaf in report["leaves"])


@pytest.mark.slow
def test_empty_leaf_is_an_error_naming_the_filters(smollm2_dir, tmp_path):
    from mlxlab.sdg.sdg import generate_data

    tax = make_taxonomy(tmp_path / "taxonomy")
    # a threshold no judge can reach empties the leaf for certain
    with pytest.raises(MlxlabError) as info:
        generate_data(tax, output=tmp_path / "data", samples_per_seed=1, max_tokens=8, judge_max_tokens=4,
                      question_threshold=2, quiet=True, prompt_style="lab", scorer="judge", gates=False)
    message = str(info.value)
    assert "compositional_skills/writing/haiku" in message and "question_judge:" in message
    assert "--allow-empty" in message and (tmp_path / "data" / "report.json").exists()


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(smollm2_dir, tmp_path):
    tax = make_taxonomy(tmp_path / "taxonomy")
    command = [sys.executable, "-m", "mlxlab", "generate", "--taxonomy", str(tax), *SMALL]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    subprocess.run([*command, "--output", str(full)], check=True, timeout=600, capture_output=True)

    proc = subprocess.Popen([*command, "--output", str(resumed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    journal = resumed / ".journal" / "compositional_skills__writing__haiku.jsonl"
    deadline = time.time() + 300
    # kill after the first group of units is on disk and before the run ends
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(journal.read_text().splitlines()) - 1
    assert not (resumed / "report.json").exists() and 0 < partial

    subprocess.run([*command, "--output", str(resumed)], check=True, timeout=600, capture_output=True)
    assert _final(resumed) == _final(full)
    units = [json.loads(line)["unit"] for line in journal.read_text().splitlines()[1:]]
    assert len(units) == len(set(units))                               # nothing done twice


# ---------------------------------------------------------------------------------------------- scripted

NEW_TOPICS = {"the sea": "", "autumn": "Compose verses on falling maple foliage in October?",
              "city": "Describe sleepless neon streets after midnight in seventeen syllables.",
              "coffee": "Celebrate espresso crema at dawn in three short lines.",
              "mountain": "Capture glaciers, cliffs and circling eagles in brief Japanese form."}


class ScriptedTeacher:
    """Canned outputs by role (garbage included), through the real pipeline, journal and datasets."""

    backend, model_ref, url, batch_size, concurrency = "scripted", "scripted", None, 4, 1

    def __init__(self):
        from mlxlab.teacher.completions import GenerationStats

        self.stats = GenerationStats()
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, prompts, *, n=1, seeds=None, progress=None, **_):
        from mlxlab.teacher.completions import Completion

        self.calls += 1
        out = []
        for messages in prompts:
            user = messages[-1]["content"]
            if "Write one new question for the same task" in user:          # questions
                topic = next(t for t in NEW_TOPICS if t in user)
                text = ("\x00]]garbage[[" if topic == "the sea" else
                        f"[Start of Question]\n{NEW_TOPICS[topic]}\n[End of Question]")
            elif "Judge the question below" in user:                        # question judge
                text = ("Fine. Score: 0" if "maple" in user else "[Start of Score]\n1\n[End of Score]")
            elif "Answer the question at the end" in user:                  # answers
                text = "[Start of Answer]\nSoft steam and quiet light, the morning waves of the day.\n[End of Answer]"
            elif "Rate how well the answer" in user:                        # pair judge
                text = "no idea at all" if "neon" in user else "[Start of Score]\n3\n[End of Score]"
            else:
                text = "unexpected prompt"
            out.append([Completion(text, len(text.split()), "stop")])
            if progress:
                progress(1, len(text.split()))
        return out


def test_scripted_pipeline_counts_every_filter(tmp_path):
    from mlxlab.sdg import sdg

    teacher = ScriptedTeacher()
    tax = make_taxonomy(tmp_path / "taxonomy")
    # a teacher of unknown size gets the LAB prompts and judges (auto); held-out seeds are not used
    result = sdg.generate_data(tax, teacher=teacher, output=tmp_path / "data", samples_per_seed=1, quiet=True,
                               judge_mode="generate", heldout_fraction=0, valid_fraction=0)
    report = json.loads(result.report.read_text())
    assert report["methods"]["prompt_style"] == "lab" and report["methods"]["scorer"] == "judge"
    (leaf,) = report["leaves"]
    funnel = {s["stage"]: (s["sent"], s["unparsed"], s["passed"]) for s in leaf["stages"]}
    # sea: garbage question; autumn: judged 0; city: unreadable pair verdict; coffee and mountain kept
    assert funnel == {"questions": (5, 1, 4), "answers": (4, 0, 4), "gates": (4, 0, 4),
                      "question_judge": (4, 0, 3), "pair_judge": (3, 1, 2)}
    assert leaf["kept"] == 2 and result.kept == {"compositional_skills/writing/haiku": 2}
    lines = [json.loads(x) for x in result.train.read_text().splitlines() + result.valid.read_text().splitlines()]
    generated = [x for x in lines if x["metadata"]["source"] == "generated"]
    assert len(generated) == 2 and all(x["metadata"]["scores"]["pair"] == "3" for x in generated)
    assert len(lines) == 2 + 5                                           # the five seeds are trained on too
    assert result.knowledge_phase1 is None                               # no knowledge leaf: no phase 1
    calls = teacher.calls
    again = sdg.generate_data(tax, teacher=teacher, output=tmp_path / "data", samples_per_seed=1, quiet=True,
                              judge_mode="generate", heldout_fraction=0, valid_fraction=0)
    assert teacher.calls == calls and again.kept == result.kept          # all from the journal


def test_fallback_rejects_garbage():
    assert extract("\x00]]garbage[[", "Question", fallback=True) is None
    assert extract("?? 12 !!", "Question", fallback=True) is None


# ---------------------------------------------------------------------------------------------- few-shot

FEWSHOT_OUTPUTS = [
    (" Write a haiku about a quiet library.\nA: Pages breathe in dust, whispers settle on the shelves, time folds "
     "into books.", "stop"),
    (" I'm ready to help! What's your next question?\nA: [SUBCKILL Question] here is the haiku you wanted", "stop"),
    (" Write a haiku about rain on a window.\nA: The rain taps the glass and sings all night.\nThe rain taps the "
     "glass and sings all night.\nThe rain taps the glass and sings all night.", "stop"),
    (" Write a haiku about snow on the hills.\nA: Write a haiku about snow on the hills.", "stop"),
    (" Write a haiku about the wind in pines.\nA: Needles hum and sway, the wind combs through", "length"),
    (" nothing that follows the pattern", "stop"),
    (" Write a haiku about an old harbor.\nA: Ropes creak on the pier, gulls argue over nets, the tide keeps "
     "its time.", "stop"),
    (" Write a haiku about a candle.\nA: A small flame leans east, wax tears gather in silence, the dark "
     "waits outside.", "stop"),
]


class FewshotTeacher:
    """A small in-process teacher, scripted: pattern continuations (junk included) and likelihoods."""

    backend, model_ref, url, batch_size, concurrency = "scripted-small", "scripted-small", None, 4, 1

    def __init__(self):
        from mlxlab.teacher.completions import GenerationStats

        self.stats = GenerationStats()
        self.prompts: list[str] = []
        self.stops: list[tuple] = []
        self.count = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def num_parameters(self) -> int:
        return 135_000_000

    def can_score(self) -> bool:
        return True

    def complete(self, texts, *, stop=(), seeds=None, progress=None, **_):
        from mlxlab.teacher.completions import Completion

        out = []
        for text in texts:
            self.prompts.append(text)
            self.stops.append(tuple(stop))
            if text.rstrip().endswith("Q:") and "\nText:" in text:            # knowledge: ask about the passage
                heading = text.rsplit("\nText: ", 1)[1].splitlines()[0].lstrip("# ")
                reply = (" " + KNOWLEDGE_QUESTIONS[heading], "stop")
            else:
                reply = FEWSHOT_OUTPUTS[self.count % len(FEWSHOT_OUTPUTS)]
                self.count += 1
            out.append(Completion(reply[0], len(reply[0].split()), reply[1]))
            if progress:
                progress(1, len(reply[0].split()))
        return out

    def loglikelihood(self, pairs, progress=None, **_):
        # full answers are "explained" by their question (a positive score), short ones are not
        out = []
        for prefix, continuation in pairs:
            n = max(1, len(continuation.split()))
            out.append((-n * (0.5 if n >= 8 else 2.0) if prefix != "A:" else -n * 1.5, n))
        if progress:
            progress(len(pairs), 0)
        return out


# the scripted teacher's question about each passage of MARS, by the passage's heading
KNOWLEDGE_QUESTIONS = {"Mars": "Which planet is fourth from the Sun?", "Atmosphere": "What is the air of Mars made of?",
                       "Surface": "What is the largest volcano on Mars?",
                       "Volcanoes": "What is the largest volcano in the solar system?"}


def test_fewshot_style_gates_and_likelihood_with_a_small_teacher(tmp_path):
    from mlxlab.sdg import sdg
    from mlxlab.sdg.chunking import passages

    teacher = FewshotTeacher()
    tax = make_taxonomy(tmp_path / "taxonomy", knowledge=True)
    result = sdg.generate_data(tax, teacher=teacher, output=tmp_path / "data", samples_per_seed=3, quiet=True,
                               keep_fraction=1.0, chunk_tokens=40)
    report = json.loads(result.report.read_text())
    assert report["methods"]["prompt_style"] == "fewshot" and report["methods"]["scorer"] == "likelihood"
    assert "135M" in report["methods"]["why"]
    leaves = {leaf["kind"]: leaf for leaf in report["leaves"]}
    skill = leaves["freeform_skill"]
    assert [s["stage"] for s in skill["stages"]] == ["fewshot", "gates", "likelihood"]
    fewshot, gates, likelihood = skill["stages"]
    assert fewshot["sent"] == 3 * 3 and fewshot["unparsed"] == 1           # 3 training seeds x 3 attempts
    # every kind of debris is removed by its own gate, each counted with an example
    assert {"leakage", "repetition", "echo", "truncated"} <= set(gates["removed"])
    assert skill["gate_examples"]["leakage"][0]["reason"]
    assert gates["passed"] == fewshot["parsed"] - sum(gates["removed"].values())
    # the pattern: task, seed blocks, then the open marker; one pair per completion
    prompt = next(p for p in teacher.prompts if "haiku" in p)
    assert prompt.startswith("Write a short haiku") and prompt.endswith("Q:") and prompt.count("\nA: ") == 3
    assert "\nQ:" in teacher.stops[0]
    kept = [json.loads(x) for x in (result.train.read_text() + result.valid.read_text()).splitlines()]
    generated = [x for x in kept if x["metadata"]["source"] == "generated"]
    assert generated and all(x["metadata"]["scores"]["likelihood"] > 0 for x in generated)
    texts = " ".join(x["messages"][0]["content"] + x["messages"][1]["content"] for x in generated)
    assert "SUBCKILL" not in texts and "taps the glass" not in texts and "snow on the hills" not in texts
    # knowledge is back-translated: the teacher writes the question, a passage of the document is the answer
    knowledge = leaves["knowledge"]
    assert [s["stage"] for s in knowledge["stages"]] == ["questions", "gates", "likelihood"]
    asked = [p for p in teacher.prompts if p.endswith("Q:") and "\nText: ## Surface\n" in p]
    assert asked and asked[0].startswith("Notes on the planet Mars.") and "\nQ: Question " in asked[0]
    assert teacher.stops[teacher.prompts.index(asked[0])] == ("\n",)
    assert knowledge["stages"][0]["sent"] == 3 * 3        # every passage (introduction, Surface, Atmosphere) x 3
    phase1 = [json.loads(x) for x in result.knowledge_phase1.read_text().splitlines()]
    backtranslated = [x for x in phase1 if x["metadata"]["source"] == "generated"]
    assert len(backtranslated) == knowledge["kept"] == 3          # each question three times: deduplicated
    assert backtranslated[1]["messages"] == [
        {"role": "user", "content": "What is the largest volcano on Mars?"},
        {"role": "assistant", "content": "The surface of Mars is red because of iron oxide dust. Olympus Mons, the "
                                         "largest volcano in the solar system, stands on Mars."}]
    mars = passages([tmp_path / "taxonomy-docs/mars.md"])             # the short introduction and Atmosphere too
    assert [x["messages"][1]["content"] for x in backtranslated] == [p["text"] for p in mars]
    assert all(x["metadata"]["answer_from"] == "document" for x in backtranslated)


def test_self_replay_keeps_whole_sentences(tmp_path):
    from mlxlab.sdg.datasets import general_prompts, self_replay
    from mlxlab.teacher.completions import Completion

    class Student:
        def generate(self, prompts, **_):
            return [[Completion("Paris is the capital. It lies on the Seine and is", 12, "length")],
                    [Completion("Water boils at 100 degrees Celsius at sea level.", 10, "stop")],
                    [Completion("no sentence end at all and cut", 8, "length")]]

    path = self_replay(Student(), tmp_path, prompts=["a?", "b?", "c?"])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["messages"][1]["content"] for r in records] == [
        "Paris is the capital.", "Water boils at 100 degrees Celsius at sea level."]
    assert all(r["metadata"]["source"] == "replay" for r in records)
    prompts = general_prompts()
    assert len(prompts) >= 40 and len(set(prompts)) == len(prompts)
    bad = tmp_path / "p.yaml"
    bad.write_text("prompts: [1, 2]\n")
    with pytest.raises(MlxlabError, match="list of non-empty strings"):
        general_prompts(bad)


def test_shipped_evaluation_sets_are_valid_chat_data():
    from mlxlab.train.data import read_jsonl
    from mlxlab.sdg.datasets import GENERAL_VALID

    general = read_jsonl(GENERAL_VALID)
    jolie = read_jsonl(ROOT / "benchmarks" / "data" / "jolie_heldout.jsonl")
    held_general = read_jsonl(ROOT / "benchmarks" / "data" / "general_chat.jsonl")
    assert len(general) >= 30 and len(jolie) >= 30 and len(held_general) >= 20
    # the benchmark's sets are independent of what training watches and of the taxonomy's seeds
    questions = lambda rs: [r["messages"][0]["content"] for r in rs]  # noqa: E731
    assert max(rouge_l(a, b) for a in questions(general) for b in questions(held_general)) < 0.5
    from mlxlab.sdg.datasets import seed_items
    from mlxlab.taxonomy.taxonomy import Taxonomy

    seeds = [it["question"] for leaf in Taxonomy.load(ROOT / "taxonomy", fetch_documents=False).leaves
             for it in seed_items(leaf)]
    assert max(rouge_l(a, b) for a in questions(jolie) for b in seeds) < 0.5


# ---------------------------------------------------------------------------------------------- journal keys

RED_PLANET = """\
# Mars

## Surface

The surface of Mars is red because iron oxide dust covers its rocks, and Olympus Mons, the largest volcano of
the solar system, rises far above the plains around it.

## Atmosphere

The atmosphere of Mars is thin and made mostly of carbon dioxide, so liquid water boils away quickly and the
nights on the surface are extremely cold all year.

## Moons

Phobos and Deimos are the two small moons of Mars; both are irregular lumps of rock that may be asteroids
captured long ago by the gravity of the planet.
"""
NEW_TOP = ("Mars is the fourth planet from the Sun, a cold desert world about half the size of Earth, and "
           "probes have studied it from orbit since the nineteen sixties.")


class EchoTeacher(FewshotTeacher):
    """A scripted teacher that asks about exactly what it is shown: its question quotes the last words of the
    passage (few-shot) or chunk (LAB) in its prompt, so a question paired with another text is caught."""

    def __init__(self, backend: str = "scripted-small", batch_size: int = 4, concurrency: int = 1):
        super().__init__()
        self.backend, self.batch_size, self.concurrency = backend, batch_size, concurrency

    @staticmethod
    def ask(text: str, example: str = "") -> str:
        return f"Why {' '.join(text.split()[-4:])}{example}?"

    def complete(self, texts, *, stop=(), seeds=None, progress=None, **_):
        from mlxlab.teacher.completions import Completion

        out = []
        for text in texts:
            self.prompts.append(text)
            if "\nText:" in text:           # knowledge: the seed example shown, then the passage asked about
                example = text.split("Mars context number ", 1)[1][0]
                question = self.ask(text.rsplit("\nText: ", 1)[1].removesuffix("\nQ:"), f" (example {example})")
            else:
                question = "Write a haiku about a quiet library.\nA: Pages breathe in dust, whispers settle."
            out.append(Completion(" " + question, 8, "stop"))
        if progress:
            progress(len(texts), 8 * len(texts))
        return out

    def generate(self, prompts, *, n=1, seeds=None, progress=None, **_):
        from mlxlab.teacher.completions import Completion

        out = []
        for messages in prompts:
            user = messages[-1]["content"]
            self.prompts.append(user)
            chunk = user.split("[Start of Document]\n", 1)[-1].split("\n[End of Document]", 1)[0]
            text = f"[Start of Question]\n{self.ask(chunk)}\n[End of Question]\n[Start of Answer]\nIt is.\n" \
                   "[End of Answer]"
            out.append([Completion(text, 8, "stop")])
        if progress:
            progress(len(prompts), 8 * len(prompts))
        return out


def _generated(out: Path, kind: str) -> list[dict]:
    rows = [json.loads(x) for p in sorted((out / "generated").glob("*.jsonl")) for x in p.read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


@pytest.mark.parametrize("style", ["fewshot", "lab"])
def test_an_edited_document_never_pairs_old_questions_with_new_text(tmp_path, style):
    from mlxlab.sdg import sdg

    tax = make_taxonomy(tmp_path / "taxonomy", knowledge=True)
    doc = tmp_path / "taxonomy-docs" / "mars.md"
    doc.write_text(RED_PLANET)
    settings = dict(output=tmp_path / "data", samples_per_seed=2, quiet=True, gates=False, scorer="none",
                    allow_empty=True, prompt_style=style, chunk_tokens=40)
    sdg.generate_data(tax, teacher=EchoTeacher(batch_size=1), **settings)
    doc.write_text(RED_PLANET.replace("# Mars\n", f"# Mars\n\n{NEW_TOP}\n"))     # a paragraph at the top
    teacher = EchoTeacher(batch_size=1)
    result = sdg.generate_data(tax, teacher=teacher, **settings)
    samples = _generated(tmp_path / "data", "knowledge")
    grounding = "answer" if style == "fewshot" else "chunk"
    assert samples and all(s["question"].startswith(EchoTeacher.ask(s[grounding])[:-1]) for s in samples)
    if style == "fewshot":
        # units are keyed by their passage: only the new paragraph is asked about, the others keep their questions
        asked = [p for p in teacher.prompts if "\nText:" in p]
        assert asked and all(NEW_TOP in p for p in asked)
        assert any(NEW_TOP == s["answer"] for s in samples) and len({s["answer"] for s in samples}) == 4
    else:
        # units are keyed by chunk position: a changed document starts the leaf afresh, and says so
        report = json.loads(result.report.read_text())
        notes = next(leaf["notes"] for leaf in report["leaves"] if leaf["kind"] == "knowledge")
        assert any("its documents" in note and "started afresh" in note for note in notes)


@pytest.mark.parametrize("small, large", [
    (dict(backend="openai", concurrency=1), dict(backend="openai", concurrency=4)),    # group: concurrency x 2
    (dict(backend="llama-cpp", batch_size=1), dict(backend="llama-cpp", batch_size=5))])  # group: the batch
def test_fewshot_prompts_do_not_depend_on_batch_or_fleet_size(tmp_path, small, large):
    from mlxlab.sdg import sdg

    tax = make_taxonomy(tmp_path / "taxonomy", knowledge=True)
    (tmp_path / "taxonomy-docs" / "mars.md").write_text(RED_PLANET.replace("# Mars\n", f"# Mars\n\n{NEW_TOP}\n"))
    settings = dict(samples_per_seed=3, quiet=True, gates=False, scorer="none", allow_empty=True)
    small, large = EchoTeacher(**small), EchoTeacher(**large)
    sdg.generate_data(tax, teacher=small, output=tmp_path / "a", **settings)
    sdg.generate_data(tax, teacher=large, output=tmp_path / "b", **settings)
    assert sorted(small.prompts) == sorted(large.prompts)
    assert _final(tmp_path / "a")["files"] == _final(tmp_path / "b")["files"]
    asked = [p for p in small.prompts if "\nText:" in p]
    assert len({p.split("Mars context number ", 1)[1][0] for p in asked}) > 1     # the examples still vary
    if large.backend == "openai":
        # an OpenAI fleet's size is not part of the journal's fingerprint: what a fleet of another size resumes
        # is what it would have written itself
        again = EchoTeacher("openai", concurrency=4)
        sdg.generate_data(tax, teacher=again, output=tmp_path / "a", **settings)
        assert again.prompts == [] and _final(tmp_path / "a")["files"] == _final(tmp_path / "b")["files"]


@pytest.mark.slow
def test_an_edited_document_with_the_embedded_teacher_asks_only_about_its_new_passage(smollm2_dir, tmp_path):
    from mlxlab.sdg.chunking import passages
    from mlxlab.sdg.fewshot import passage_keys
    from mlxlab.sdg.sdg import generate_data

    tax = make_taxonomy(tmp_path / "taxonomy", knowledge=True)
    shutil.rmtree(tax / "compositional_skills")
    doc = tmp_path / "taxonomy-docs" / "mars.md"
    doc.write_text(RED_PLANET)
    settings = dict(output=tmp_path / "data", samples_per_seed=1, max_tokens=24, batch_size=1, allow_empty=True,
                    quiet=True, seed=1)
    generate_data(tax, **settings)
    journal = tmp_path / "data" / ".journal" / "knowledge__astronomy__mars.jsonl"
    before = journal.read_text().splitlines()
    doc.write_text(RED_PLANET.replace("# Mars\n", f"# Mars\n\n{NEW_TOP}\n"))
    generate_data(tax, **settings)
    added = [json.loads(line)["unit"] for line in journal.read_text().splitlines()[len(before):]]
    (new_key, _passage), = [(k, p) for k, p in passage_keys(passages([doc])) if p["text"] == NEW_TOP]
    assert added == [f"questions/{new_key}/0"]            # the three unchanged passages kept their questions
    keys = {p["text"]: key for key, p in passage_keys(passages([doc]))}
    assert all(s["unit"].split("/")[0] == keys[s["answer"]] for s in _generated(tmp_path / "data", "knowledge"))


def test_back_translated_passages_longer_than_three_seed_answers_are_kept(tmp_path):
    # issue 20: public knowledge leaves have one-sentence seed answers (here 7 words); a passage of 57 words is the
    # answer of a back-translated pair, and the length gate bounded it by 3 x the seed answers (40 words)
    from mlxlab.sdg import sdg

    tax = make_taxonomy(tmp_path / "taxonomy", knowledge=True)
    passage = ("Olympus Mons is the largest volcano in the solar system. It stands on Mars, about 22 kilometres "
               "high, nearly three times the height of Mount Everest. The volcano is so wide and its slopes so "
               "gentle that someone standing on it would not see the summit. Lava flows built it over billions "
               "of years; cliffs ring it.")
    assert len(passage.split()) == 57
    (tmp_path / "taxonomy-docs" / "mars.md").write_text(f"# Mars\n\n## Volcanoes\n\n{passage}\n")
    result = sdg.generate_data(tax, teacher=FewshotTeacher(), output=tmp_path / "data", samples_per_seed=1,
                               quiet=True, keep_fraction=1.0, allow_empty=True)
    knowledge = next(leaf for leaf in json.loads(result.report.read_text())["leaves"] if leaf["kind"] == "knowledge")
    assert knowledge["gates"].get("length", 0) == 0, knowledge["gate_examples"]
    assert knowledge["kept"] == 1
