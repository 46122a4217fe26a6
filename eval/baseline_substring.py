"""The earlier attempts' filter, reconstructed for comparison: a case-insensitive substring list
of 13 platform names and 9 meeting phrases. Scores it on a labelled set the way
`persona check --labelled` does (recall per category, false positives on benign texts).

    python3 eval/baseline_substring.py eval/filter_labelled.jsonl
"""
import json
import sys

PLATFORMS = ["instagram", "snapchat", "tiktok", "twitter", "facebook", "whatsapp", "telegram",
             "kik", "discord", "reddit", "youtube", "linkedin", "tinder"]
MEETING = ["meet up", "meet in person", "in person", "grab coffee", "my place", "your place",
           "hang out", "come over", "irl"]


def blocked(text):
    t = text.lower()
    return any(p in t for p in PLATFORMS) or any(m in t for m in MEETING)


def main(path):
    items = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    for category in ("social_platform", "in_person_meeting"):
        labelled = [i for i in items if i["category"] == category]
        caught = sum(blocked(i["text"]) for i in labelled)
        print(f"{category}: recall {caught / len(labelled):.3f} ({caught}/{len(labelled)})")
    benign = [i for i in items if i["category"] is None]
    fp = sum(blocked(i["text"]) for i in benign)
    print(f"benign: false positives {fp / len(benign):.3f} ({fp}/{len(benign)})")


if __name__ == "__main__":
    main(sys.argv[1])
