"""Research tools: composite labels, synthetic multi-sense data, explaining a label's copies."""
