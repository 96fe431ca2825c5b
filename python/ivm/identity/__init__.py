"""Per-VM identity: the files in machines/<name>/, their rules, and the small disk that carries them."""
