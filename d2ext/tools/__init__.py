"""d2ext's command-line tools, importable after ``pip install`` (``python -m d2ext.tools.demo``,
or the console scripts d2ext-train, d2ext-demo, d2ext-export); ``tools/*.py`` call these."""
