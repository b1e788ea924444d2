"""The Docker engine: what the tool asks of it, and what it knows of it.

- ``facts``: what the engine and its client say of themselves (versions, image
  store, buildx and its driver), and so which cache mechanism fits them.
- ``images``: images, layers, save and load, through the Engine API.
- ``containers``: the container calls of ``run`` and ``cleanup``.
- ``errors``: docker-py's exceptions as the tool's one-line EngineError.

Nothing outside this package sees docker-py's exceptions.
"""
