"""Use the Python API with your own clips and your own label set.

Run from the repository root:  python examples/custom_labels.py [--model debug --codec debug]
With the default (real) models this needs their weights (see the README); with `debug` it runs
anywhere, and its predictions are meaningless by construction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icl_audio import ICLClassifier

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="debug")
    parser.add_argument("--codec", default="debug")
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args()

    # Support clips and labels of your own: here spoken digits, labelled with words of our choosing.
    words = {"one": "the number one", "two": "the number two", "three": "the number three"}
    paths, labels = [], []
    for folder in sorted((HERE / "support").iterdir()):
        for clip in sorted(folder.glob("*.wav")):
            paths.append(clip)
            labels.append(words[folder.name])

    clf = ICLClassifier(model=args.model, codec=args.codec, k=args.k).fit(paths, labels)
    query = HERE / "query_two.wav"
    print("classes:", clf.classes_)
    print("predict:", clf.predict([query]))
    print("predict_proba:", clf.predict_proba([query]).round(3).tolist())
    # Candidate labels need not be the support set's: every candidate is scored exactly.
    for row in clf(query, candidate_labels=["the number two", "a dog barking", "rain on a roof"]):
        print(f"{row['score']:.3f}  {row['label']}")


if __name__ == "__main__":
    main()
