"""`icl-audio support ...`: build, list, inspect, remove and download support sets."""
