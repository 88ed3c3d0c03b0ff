"""Code more than one benchmark suite uses: the synthetic store (``synthetic_store``) and the
fresh-interpreter runs of a benchmark module (``child``)."""
