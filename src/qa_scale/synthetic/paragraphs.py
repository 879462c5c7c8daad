"""Deterministic synthetic Chinese extractive-QA data (HW7 and SQuAD/CMRC/DRCD formats).

This is the data of the project's embedded demo and of most tests. Every paragraph talks
about several entities of the same kind (several people, several cities, several
organisations) and is assembled from template sentences, so that

* every answer is a substring of its paragraph, and its ``answer_start`` is recorded while
  the paragraph is assembled (it points at the occurrence that actually answers the
  question, even when the same text occurs twice);
* every question names the entity whose attribute it asks about, and the paragraph holds
  other candidates of the answer's category (other years, other cities, other people,
  other amounts with the same unit ...), so that guessing by answer type alone fails and a
  model has to read;
* filler and distractor sentences make paragraphs 250-900 characters long, i.e. several
  128-token windows of a character-level Chinese BERT tokenizer;
* the text mixes full-width punctuation (，。「」《》（）), ASCII (``HXT科技有限公司``,
  ``3.5``, ``XT-200型``) and answers with book-title marks (``《星空笔记》``).

Only the standard library is used, and everything is driven by :class:`random.Random`
instances seeded from :attr:`SampleConfig.seed`, so the same configuration always gives
byte-identical files.

Modules
-------
* ``config``: :class:`SampleConfig` - sizes, seed, questions per paragraph, paragraph length range.
* ``entities`` and ``templates``: what paragraphs are made of (name tables, sentence templates).
* ``paragraphs`` (here): :func:`generate` - ``{"train"|"dev"|"test": [paragraph record, ...]}`` in memory.
* ``writers``: :func:`write_hw7`, :func:`write_squad`, :func:`write_all` - the files on disk.

In-memory paragraph record::

    {"id": "TRAIN_0", "title": "王伟", "context": "...",
     "qas": [{"id": "TRAIN_0_QUERY_0", "question": "...？",
              "answers": [{"text": "...", "answer_start": 12}, ...],
              "category": "year",              # answer category (see CATEGORIES)
              "fact_type": "birth_year",       # which attribute is asked (see FACT_TYPES)
              "question_template": "birth_year#1"}],
     "entities": [{"text": "...", "category": "year", "start": 12}, ...]}

``entities`` lists every entity mention of the paragraph (what a type-guessing baseline
could pick from); ``category``, ``fact_type``, ``question_template`` and ``entities`` are
extra keys of the in-memory form only and are never written to the HW7/SQuAD files.

Write every file with ``qa-scale sample-data --out DIR [--seed N]``.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Mapping

from .config import SampleConfig
from .entities import KIND_CATEGORY, REUSE_FROM, Entity, EntityPool
from .templates import (
    DISTRACTORS,
    FILLERS,
    GROUPS,
    ORG_KINDS,
    QUESTIONS,
    SUBJECT_KIND,
    SentenceGroup,
)

MAX_ATTEMPTS = 400  # attempts per paragraph before giving up on a configuration


@dataclass
class Sentence:
    text: str
    spans: list[tuple[str, int, Entity]]  # (slot, offset within the sentence, entity)
    group: SentenceGroup | None = None
    values: dict[str, Entity] | None = None


def render(template: str, values: Mapping[str, Entity]) -> tuple[str, list[tuple[str, int, Entity]]]:
    parts: list[str] = []
    spans: list[tuple[str, int, Entity]] = []
    pos = 0
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        pos += len(literal)
        if field is not None:
            ent = values[field]
            spans.append((field, pos, ent))
            parts.append(ent.text)
            pos += len(ent.text)
    return "".join(parts), spans


class ParagraphBuilder:
    def __init__(self, rng: random.Random, config: SampleConfig, with_variants: bool) -> None:
        self.rng = rng
        self.config = config
        self.with_variants = with_variants

    # ---------------------------------------------------------------- subjects
    def _new_subject(self, pool: EntityPool, kind: str) -> Entity:
        if kind == "org":
            return pool.new(self.rng.choice(ORG_KINDS))
        return pool.new(kind)

    def _slot_value(
        self, pool: EntityPool, kind: str, subject: Entity, subjects: list[Entity], years: tuple[int, int] | None
    ) -> Entity:
        reuse = REUSE_FROM.get(kind)
        if reuse is not None and self.rng.random() < 0.3:
            others = [s for s in subjects if s.category == reuse and s is not subject]
            if others:
                return self.rng.choice(others)
        return pool.new(kind, years)

    def _subject_block(self, pool: EntityPool, subject_slot: str, subject: Entity, subjects: list[Entity]) -> list[Sentence]:
        groups = [
            g for g in GROUPS
            if g.subject == subject_slot and (not g.only or subject.kind in g.only)
        ]
        self.rng.shuffle(groups)
        n = self.rng.randint(2, min(5, len(groups)))
        # A person's life events happen between the age of 18 and 70 (and before 2024).
        birth: Entity | None = None
        years: tuple[int, int] | None = None
        if subject_slot == "P":
            birth = pool.new("year_birth")
            b = int(birth.primary[1][:4])
            years = (b + 18, min(b + 70, 2023))
        block = []
        for group in groups[:n]:
            values = {subject_slot: subject}
            for slot, kind in group.slots:
                if slot == "birth_year" and birth is not None:
                    values[slot] = birth
                else:
                    values[slot] = self._slot_value(pool, kind, subject, subjects, years)
            text, spans = render(self.rng.choice(group.phrasings), values)
            block.append(Sentence(text, spans, group, values))
        return block

    # ---------------------------------------------------------------- one attempt
    def _attempt(self, pid: str) -> dict[str, Any] | None:
        """One try at a paragraph (None when it does not fit the length or question settings)."""
        rng = self.rng
        target = rng.randint(*self.config.paragraph_chars)
        n_questions = rng.randint(*self.config.questions_per_paragraph)
        pool = EntityPool(rng)
        planned = self._subjects(pool, target, n_questions)
        if planned is None:
            return None
        subjects, sentences = planned
        chosen = self._questions(sentences, n_questions)
        if chosen is None or not self._pad(pool, sentences, chosen, target):
            return None
        return self._assemble(pid, subjects, sentences, chosen)

    def _subjects(self, pool: EntityPool, target: int, n_questions: int
                  ) -> tuple[list[Entity], list[Sentence]] | None:
        """Phase 1: at least two subjects of a main kind, then more until the facts fill ~60 %."""
        rng, hi = self.rng, self.config.paragraph_chars[1]
        main = rng.choice(("P", "P", "C", "O"))
        plan = [main, main]
        subjects: list[Entity] = []
        sentences: list[Sentence] = []
        fact_budget = max(int(target * 0.6), 1)
        i = 0
        while True:
            slot = plan[i] if i < len(plan) else rng.choice((main, "P", "C", "O"))
            subject = self._new_subject(pool, SUBJECT_KIND[slot])
            subjects.append(subject)
            sentences.extend(self._subject_block(pool, slot, subject, subjects))
            i += 1
            length = sum(len(s.text) for s in sentences)
            n_facts = sum(len(s.group.facts) for s in sentences if s.group)
            if i >= len(plan) and length >= fact_budget and n_facts >= n_questions:
                return subjects, sentences
            if length > hi:
                return None

    def _questions(self, sentences: list[Sentence], n_questions: int) -> list[tuple[Sentence, str]] | None:
        """Phase 2: the facts asked about; distinct fact types first, one question per (subject, fact)."""
        facts = [(s, f) for s in sentences if s.group for f in s.group.facts]
        self.rng.shuffle(facts)
        chosen: list[tuple[Sentence, str]] = []
        used_types: set[str] = set()
        taken: set[tuple[int, str]] = set()
        for s, f in facts:
            if len(chosen) < n_questions and f not in used_types:
                chosen.append((s, f))
                used_types.add(f)
                taken.add((id(s), f))
        for s, f in facts:
            if len(chosen) < n_questions and (id(s), f) not in taken:
                chosen.append((s, f))
                taken.add((id(s), f))
        return chosen if len(chosen) >= n_questions else None

    def _pad(self, pool: EntityPool, sentences: list[Sentence], chosen: list[tuple[Sentence, str]],
             target: int) -> bool:
        """Phase 3: distractors for answer categories with a single distinct entity so far, then
        fillers (half of them distractors too) up to the target length; False when it cannot fit."""
        rng = self.rng
        lo, hi = self.config.paragraph_chars
        extra: list[Sentence] = []

        def distinct(category: str) -> set[str]:
            return {e.primary[1] for x in sentences + extra for _, _, e in x.spans if e.category == category}

        length = sum(len(s.text) for s in sentences)
        for s, f in chosen:
            ent = s.values[f]  # type: ignore[index]
            if len(distinct(ent.category)) >= 2:
                continue
            options = [t for t in DISTRACTORS if t[0] == ent.kind] or [
                t for t in DISTRACTORS if KIND_CATEGORY[t[0]] == ent.category
            ]
            kind, tmpl = rng.choice(options)
            x = Sentence(*render(tmpl, {"X": pool.new(kind)}))
            if length + len(x.text) <= hi:
                extra.append(x)
                length += len(x.text)
        while length < target:
            if rng.random() < 0.5:
                kind, tmpl = rng.choice(DISTRACTORS)
                x = Sentence(*render(tmpl, {"X": pool.new(kind)}))
            else:
                x = Sentence(rng.choice(FILLERS), [])
            if length + len(x.text) > hi:
                fitting = [f for f in FILLERS if length + len(f) <= hi]
                if not fitting:
                    break
                x = Sentence(rng.choice(fitting), [])
            extra.append(x)
            length += len(x.text)
        for x in extra:
            sentences.insert(rng.randint(1, len(sentences)), x)
        return lo <= length <= hi

    def _assemble(self, pid: str, subjects: list[Entity], sentences: list[Sentence],
                  chosen: list[tuple[Sentence, str]]) -> dict[str, Any] | None:
        """Phase 4: the paragraph record, every offset recorded while assembling."""
        starts: dict[int, int] = {}
        pos = 0
        for s in sentences:
            starts[id(s)] = pos
            pos += len(s.text)
        context = "".join(s.text for s in sentences)
        entities = [{"text": ent.primary[1], "category": ent.category, "start": starts[id(s)] + off + ent.primary[0]}
                    for s in sentences for _, off, ent in s.spans]
        qas = []
        questions_seen: set[str] = set()
        for j, (s, f) in enumerate(chosen):
            t_index = self.rng.randrange(len(QUESTIONS[f]))
            question = QUESTIONS[f][t_index].format(**{k: v.text for k, v in s.values.items()})  # type: ignore[union-attr]
            if question in questions_seen:
                return None
            questions_seen.add(question)
            qas.append(self._qa(f"{pid}_QUERY_{j}", s, f, t_index, question, starts[id(s)], context))
        return {"id": pid, "title": subjects[0].text, "context": context, "qas": qas,
                "entities": sorted(entities, key=lambda e: (e["start"], e["text"]))}

    def _qa(self, qid: str, s: Sentence, fact: str, t_index: int, question: str, sentence_start: int,
            context: str) -> dict[str, Any]:
        """The question about ``fact`` of sentence ``s``, with its reference answers (and variants)."""
        rng = self.rng
        ent_start = sentence_start + next(off for slot, off, _ in s.spans if slot == fact)
        ent = s.values[fact]  # type: ignore[index]
        answers = [{"text": ent.primary[1], "answer_start": ent_start + ent.primary[0]}]
        if self.with_variants and ent.variants:
            k = rng.randint(0, min(2, len(ent.variants)))
            for off, text in rng.sample(list(ent.variants), k):
                answers.append({"text": text, "answer_start": ent_start + off})
        if self.with_variants and len(answers) < 3 and rng.random() < 0.25:
            answers.append(dict(answers[0]))  # a second annotator agreeing (as in CMRC)
        for a in answers:
            assert context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
        return {"id": qid, "question": question, "answers": answers, "category": ent.category,
                "fact_type": fact, "question_template": f"{fact}#{t_index}"}

    def build(self, pid: str) -> dict[str, Any]:
        for _ in range(MAX_ATTEMPTS):
            record = self._attempt(pid)
            if record is not None:
                return record
        raise ValueError(
            "could not generate a paragraph with "
            f"paragraph_chars={self.config.paragraph_chars} and "
            f"questions_per_paragraph={self.config.questions_per_paragraph}; "
            "widen the length range or ask for fewer questions"
        )


def generate(config: SampleConfig | None = None) -> dict[str, list[dict[str, Any]]]:
    """Generate the ``train``, ``dev`` and ``test`` splits in memory.

    Each split is a list of paragraph records (see the module docstring). The ``test``
    split keeps its answers here so that callers can evaluate; the writers drop them where
    the file format requires. Train questions have one answer; dev/test questions 1-3
    reference answers (variants without a unit, without 「」/《》, ... all at their own
    correct offsets). Each split draws from its own random stream, and no paragraph text
    appears in two splits.
    """
    config = config if config is not None else SampleConfig()
    seen: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for split, size in config.split_sizes().items():
        rng = random.Random(f"qa-scale-sample:{config.seed}:{split}")
        builder = ParagraphBuilder(rng, config, with_variants=split != "train")
        records = []
        while len(records) < size:
            record = builder.build(f"{split.upper()}_{len(records)}")
            if record["context"] in seen:  # pragma: no cover - astronomically unlikely
                continue
            seen.add(record["context"])
            records.append(record)
        out[split] = records
    return out
