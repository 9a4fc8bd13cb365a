"""The few-shot SDG style: a leaf's seed examples laid out as a pattern that the teacher simply continues.

Small models follow patterns far better than meta-instructions: with SmolLM2-135M the LAB role prompts gave
template debris, while the task description plus a few seed pairs as `Q: … A: …` blocks, ending in `Q:`,
gave on-task pairs. Each completion writes one new pair and stops at the next block's marker. Prompts for
the same seed example share their whole prefix (the same shots in the same order), so the teacher's prefix
cache prefills it once.

Layouts (each block separated by a blank line):
- freeform skill: task description, then `Q: question` / `A: answer` blocks, then `Q:`
- grounded skill: task description, then `Context: …` / `Q: …` / `A: …` blocks, then `Context:`
- knowledge (back-translation): document outline, then `Text: seed context` with its seed questions as
  `Q:` lines, then `Text: passage` and `Q:`. The teacher writes only the question; the answer is the
  passage itself, so it is faithful by construction. A 135M teacher's own answers about a chunk were mostly
  invented or cut off (6 of 10 at the token limit on the Jolie leaf), while a question is one short line
  that it writes well enough, and the likelihood scorer keeps the questions that best explain their passage.
"""

from __future__ import annotations

import hashlib
import random
import re

# bump when a layout or the unit keys change: journals of the old layout are set aside (3: passage keys)
LAYOUT_VERSION = 3
SHOTS = 4                    # seed examples shown per skill prompt
KNOWLEDGE_PAIRS = 3          # seed Q&A shown per knowledge prompt (with their context)
SCORE_WORDS = 48             # the likelihood scorer reads at most this many words of an answer
# where one new pair ends: the next block's marker (a grounded pair's own Q: is inside its block)
STOPS = {"skill": ("\nQ:", "\nText:", "\nContext:"), "grounded": ("\nContext:", "\nText:"),
         "question": ("\n",)}


def _block(question: str, answer: str, context: str | None = None) -> str:
    head = f"Context: {context.strip()}\n" if context is not None else ""
    return f"{head}Q: {question.strip()}\nA: {answer.strip()}\n\n"


def shots_for(seeds: list[dict], index: int, *, seed: int, leaf: str, shots: int = SHOTS) -> list[dict]:
    """Up to `shots` seed examples for prompts built around seed `index`: others in a stable shuffled order,
    seed `index` last (the nearest example steers the continuation most)."""
    others = [s for i, s in enumerate(seeds) if i != index]
    random.Random(f"{seed}\0{leaf}\0{index}").shuffle(others)
    return [*others[:max(0, shots - 1)], seeds[index]]


def skill_prompt(task: str, shots: list[dict], *, grounded: bool = False) -> str:
    """The pattern text for a skill leaf; the teacher continues after the final marker."""
    body = "".join(_block(s["question"], s["answer"], s.get("context", "") if grounded else None) for s in shots)
    return f"{task.strip()}\n\n{body}" + ("Context:" if grounded else "Q:")


def question_prompt(outline: str, example: dict, passage: dict) -> str:
    """The back-translation pattern: a seed context with its questions, then a passage (under its heading, as
    the seed contexts are) and `Q:`; the teacher continues with one question, ended by the newline."""
    questions = "".join(f"Q: {' '.join(qa['question'].split())}\n" for qa in example["qas"][:KNOWLEDGE_PAIRS])
    heading = f"## {passage['heading']}\n\n" if passage.get("heading") else ""
    return (f"{outline.strip()}\n\nText: {example['context'].strip()}\n{questions}\n"
            f"Text: {heading}{passage['text'].strip()}\nQ:")


def passage_keys(passages: list[dict]) -> list[tuple[str, dict]]:
    """(key, passage) in document order; the key is a hash of the passage's heading and text.

    Units keyed by content stay valid when a document changes: an edited passage gets a new key (and new
    questions), an unchanged one keeps its questions in the journal, wherever it moved in the document.
    """
    seen: dict[str, int] = {}
    out = []
    for passage in passages:
        key = hashlib.sha256(f"{passage['heading']}\0{passage['text']}".encode()).hexdigest()[:12]
        seen[key] = seen.get(key, 0) + 1
        out.append((key if seen[key] == 1 else f"{key}.{seen[key]}", passage))    # the same text twice
    return out


def parse_question(text: str) -> dict | None:
    """{question} from a back-translation continuation (its first line), or None when it is empty."""
    question = " ".join(text.split("\n", 1)[0].split()) if isinstance(text, str) else ""
    return {"question": question} if question else None


def parse_pair(text: str, *, grounded: bool = False) -> dict | None:
    """{question, answer (, context)} from one continuation, or None when the pattern is not there."""
    if not isinstance(text, str):
        return None
    fields = {}
    if grounded:
        match = re.match(r"\s*(.+?)\n\s*Q:\s*(.*)", text, re.DOTALL)
        if match is None:
            return None
        fields["context"] = match.group(1).strip()
        text = match.group(2)
    match = re.match(r"\s*(.+?)\n\s*A:\s*(.+)", text, re.DOTALL)
    if match is None:
        return None
    question, answer = match.group(1).strip(), match.group(2).strip()
    if not question or not answer or (grounded and not fields["context"]):
        return None
    return {**fields, "question": question, "answer": answer}


def score_texts(sample: dict) -> tuple[tuple[str, str], tuple[str, str]]:
    """(conditional, unconditional) (prefix, continuation) pairs for the likelihood scorer.

    The score is log p(answer | grounding, question) - log p(answer), per token of the answer's first
    `SCORE_WORDS` words: how much the question (and its chunk or context) explains the answer. Debris that
    merely continues text scores near zero or below; a fitting, grounded answer scores well above.
    """
    grounding = sample.get("chunk") or sample.get("context") or ""
    head = f"Text: {grounding.strip()}\n\n" if grounding else ""
    # the opening words of a long answer (a back-translated passage) tell as much, at a fraction of the cost
    answer = " " + re.match(rf"\s*(?:\S+\s+){{0,{SCORE_WORDS - 1}}}\S*", sample["answer"].strip()).group(0).strip()
    return (f"{head}Q: {sample['question'].strip()}\nA:", answer), ("A:", answer)


def fewshot_pipeline(run, seeds: list[dict], chunks: list) -> dict[str, dict]:
    """The few-shot style (`mlxlab.sdg.fewshot`): one new pair per continuation of the seeds' pattern."""
    from mlxlab.sdg.sdg_units import knowledge_examples

    cfg, leaf = run.cfg, run.leaf
    n = cfg.samples_per_seed
    if leaf.kind == "knowledge":
        examples = knowledge_examples(seeds)
        items = {}
        for key, p in passage_keys(run.passages):
            # the example shown depends on the passage alone, never on the batch or fleet size
            seed = random.Random(f"{cfg.seed}\0{leaf.name}\0{key}").randrange(len(examples))
            items.update({f"{key}/{k}": {"seed": seed, "answer": p["text"], "heading": p["heading"],
                                         "passage": p["source"], "answer_from": "document"} for k in range(n)})
        # prompts that show the same example go to the teacher together: a batch shares its prompt prefix
        done = run.stage("questions", dict(sorted(items.items(), key=lambda kv: kv[1]["seed"])), lambda it: (
            question_prompt(leaf.document_outline or "", examples[it["seed"]],
                            {"heading": it["heading"], "text": it["answer"]})),
            lambda text, _it: (parse_question(text), True), stop=STOPS["question"])
        return {key: done[key] for key in items if key in done}      # back in document order
    grounded = leaf.kind == "grounded_skill"
    task = leaf.task_description or ""
    items = {f"{i}/{k}": {"seed": i} for i in range(len(seeds)) for k in range(n)}
    return run.stage("fewshot", items, lambda it: skill_prompt(
        task, shots_for(seeds, it["seed"], seed=cfg.seed, leaf=leaf.name), grounded=grounded),
        lambda text, _it: (parse_pair(text, grounded=grounded), True),
        stop=STOPS["grounded" if grounded else "skill"])
