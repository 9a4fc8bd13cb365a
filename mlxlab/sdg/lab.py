"""The LAB pipelines (InstructLab's role prompts): generation roles for skills and knowledge, and their judges.

Capable teachers follow these meta-instructions and write readable verdicts; small ones do not (see
`mlxlab.sdg.fewshot`), so `mlxlab.sdg.sdg` picks the style and the scorer per teacher. Every role's template is a
YAML file under `mlxlab/prompts/`; outputs are parsed tolerantly and what cannot be read is counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mlxlab.config import GenerateConfig
from mlxlab.prompts import extract, load_prompt, parse_score
from mlxlab.sdg.sdg_units import Run, knowledge_examples, knowledge_units


def _field(tag: str, cfg: GenerateConfig, name: str | None = None):
    """A parser that reads one tagged field into `name` (always passes when read)."""
    def parse(text: str, _item: dict):
        value = extract(text, tag, fallback=cfg.tag_fallback)
        return ({name or tag.lower(): value} if value else None), True
    return parse


def _judge(prompt, tag: str, key: str, accept: Callable[[str], bool]):
    """A parser that reads a judge's verdict into scores[key] and passes it through `accept`."""
    def parse(text: str, item: dict):
        value = parse_score(text, prompt.scores, tag)
        if value is None:
            return None, False
        return {"scores": {**item.get("scores", {}), key: value}}, accept(value)
    return parse


def _context_block(item: dict) -> str:
    return f"\n[Start of Context]\n{item['context']}\n[End of Context]" if item.get("context") else ""


def skills_pipeline(run: Run, seeds: list[dict]) -> dict[str, dict]:
    """LAB skills, freeform and grounded: (contexts →) questions → answers, from the visible seed items."""
    cfg, leaf = run.cfg, run.leaf
    P = load_prompt
    task = leaf.task_description or ""
    items = {f"{i}/{k}": {"seed": i} for i in range(len(seeds)) for k in range(cfg.samples_per_seed)}
    if leaf.kind == "grounded_skill":
        items = run.stage("contexts", items, lambda it: P("grounded_contexts").render(
            task_description=task, seed_context=seeds[it["seed"]].get("context", "")), _field("Context", cfg))
        items = run.stage("questions", items, lambda it: P("grounded_questions").render(
            task_description=task, seed_question=seeds[it["seed"]]["question"], context=it["context"]),
            _field("Question", cfg))
    else:
        items = run.stage("questions", items, lambda it: P("skill_questions").render(
            task_description=task, seed_question=seeds[it["seed"]]["question"]), _field("Question", cfg))
    return run.stage("answers", items, lambda it: P("answer").render(
        seed_question=seeds[it["seed"]]["question"], seed_answer=seeds[it["seed"]]["answer"],
        question=it["question"], context_block=_context_block(it)), _field("Answer", cfg))


def skills_judges(run: Run, items: dict[str, dict]) -> dict[str, dict]:
    """The LAB skill judges: the question (0/1), then the pair (1-3)."""
    cfg, P = run.cfg, load_prompt
    qj, pj = P("question_judge"), P("pair_judge")
    items = run.stage("question_judge", items, lambda it: qj.render(
        task_description=run.leaf.task_description or "", question=it["question"], context_block=_context_block(it)),
        _judge(qj, "Score", "question", lambda v: int(v) >= cfg.question_threshold), verdict=("Score", qj.scores))
    return run.stage("pair_judge", items, lambda it: pj.render(
        question=it["question"], answer=it["answer"], context_block=_context_block(it)),
        _judge(pj, "Score", "pair", lambda v: int(v) >= cfg.pair_threshold), verdict=("Score", pj.scores))


def _qa_parse(cfg: GenerateConfig):
    def parse(text: str, _item: dict):
        question, answer = extract(text, "Question"), extract(text, "Answer")
        if not question and cfg.tag_fallback:
            # the two-field form without tags: "Q: ... A: ..." is the common shape small teachers fall into
            m = re.search(r"(?:^|\n)\s*(?:Q|Question)\s*[:.]\s*(.+?)\n\s*(?:A|Answer)\s*[:.]\s*(.+)", text, re.DOTALL)
            question, answer = (m.group(1).strip(), m.group(2).strip()) if m else (None, None)
        return ({"question": question, "answer": answer} if question and answer else None), True
    return parse


def knowledge_pipeline(run: Run, seeds: list[dict], chunks: list) -> dict[str, dict]:
    """LAB knowledge: Q&A grounded in a chunk, with a seed example's Q&A as examples."""
    cfg, leaf = run.cfg, run.leaf
    examples = knowledge_examples(seeds)

    def shown(i: int) -> str:
        return "\n".join(f"[Start of Question]\n{qa['question']}\n[End of Question]\n[Start of Answer]\n"
                         f"{qa['answer']}\n[End of Answer]" for qa in examples[i]["qas"][:3])

    return run.stage("qa", knowledge_units(examples, chunks, cfg.samples_per_seed), lambda it: load_prompt(
        "knowledge_qa").render(domain=leaf.domain or "", document_outline=leaf.document_outline or "",
                               examples=shown(it["seed"]), chunk=it["chunk"]), _qa_parse(cfg))


def knowledge_judges(run: Run, items: dict[str, dict]) -> dict[str, dict]:
    """The LAB knowledge judges: faithfulness to the chunk, relevancy, question quality."""
    cfg, P = run.cfg, load_prompt
    fj, rj, qj = P("knowledge_faithfulness"), P("knowledge_relevancy"), P("knowledge_question_quality")
    items = run.stage("faithfulness", items, lambda it: fj.render(chunk=it["chunk"], answer=it["answer"]),
                      _judge(fj, "Verdict", "faithful", lambda v: v == "YES" or not cfg.require_faithful),
                      verdict=("Verdict", fj.scores))
    items = run.stage("relevancy", items, lambda it: rj.render(question=it["question"], answer=it["answer"]),
                      _judge(rj, "Score", "relevancy", lambda v: int(v) >= cfg.relevancy_threshold),
                      verdict=("Score", rj.scores))
    return run.stage("question_quality", items, lambda it: qj.render(chunk=it["chunk"], question=it["question"]),
                     _judge(qj, "Score", "question_quality",
                            lambda v: int(v) >= cfg.question_quality_threshold), verdict=("Score", qj.scores))
