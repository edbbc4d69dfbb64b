#!/usr/bin/env bash
# How the clips in examples/ were made (they are committed; you need not run this).
# Spoken digits, like a tiny AudioMNIST: three voices per word as the support set, a fourth
# voice as the query. Needs Debian's espeak-ng and sox.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf support query_two.wav
for word in one two three; do
  mkdir -p "support/$word"
  for voice in en-us en-gb en-gb-scotland; do
    espeak-ng -v "$voice" -s 150 -w /tmp/icl_example.wav "$word"
    sox /tmp/icl_example.wav -r 16000 -c 1 -b 16 "support/$word/${word}_${voice}.wav"
  done
done
espeak-ng -v en-029 -s 140 -w /tmp/icl_example.wav "two"
sox /tmp/icl_example.wav -r 16000 -c 1 -b 16 query_two.wav
rm -f /tmp/icl_example.wav
