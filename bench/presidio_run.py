"""Presidio's analyzer over a list of texts; runs inside bench/.venv-presidio, not Corral's venv.

Reads ``{"texts": [...], "entities": [...], "passes": n}`` as JSON on stdin and writes
``{"predictions": [[{"entity", "start", "end", "score"}, ...], ...], "seconds": [...]}``
as JSON on stdout: one list of results per text, and each text's analyze() time in the
fastest of ``passes`` passes over all the texts (the least disturbed by whatever else the
machine runs, as Corral's figures are).

Presidio is wired as the issue asks: its predefined recognizers (patterns, plus the phone
recognizer built on the phonenumbers library) on a blank spaCy English pipeline, since the
spaCy model packages cannot be installed here. A blank pipeline has no lemmatizer, and
Presidio's context words are compared with lemmas, so each token's lemma falls back to its
lower-cased text: otherwise context ("card", "ssn", "phone") would never raise a score and
Presidio would be measured worse than it is. Its NER recognizer finds nothing (no model), so
names, places and organisations are out of the comparison for both sides.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import spacy
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine


class BlankSpacyEngine(SpacyNlpEngine):
    """SpacyNlpEngine over ``spacy.blank("en")``: tokens, no model."""

    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}

    def _doc_to_nlp_artifact(self, doc, language: str) -> NlpArtifacts:
        artifacts = super()._doc_to_nlp_artifact(doc, language)
        artifacts.lemmas = [t.lemma_ or t.lower_ for t in doc]
        return artifacts


def main() -> None:
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    request = json.load(sys.stdin)
    engine = BlankSpacyEngine()
    engine.load()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    entities = request["entities"]
    for text in request["texts"][:20]:  # warm-up: lazy compiles, caches
        analyzer.analyze(text=text, language="en", entities=entities)
    predictions = []
    fastest: list[float] = []
    for _ in range(request.get("passes", 1)):
        predictions = []
        seconds = []
        for text in request["texts"]:
            t0 = time.perf_counter()
            results = analyzer.analyze(text=text, language="en", entities=entities)
            seconds.append(time.perf_counter() - t0)
            predictions.append(
                [
                    {"entity": r.entity_type, "start": r.start, "end": r.end, "score": r.score}
                    for r in results
                ]
            )
        if not fastest or sum(seconds) < sum(fastest):
            fastest = seconds
    json.dump({"predictions": predictions, "seconds": fastest}, sys.stdout)


if __name__ == "__main__":
    main()
