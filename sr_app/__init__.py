"""SAN-SRGAN: 4x super-resolution (sr-train, sr-infer, sr-eval). ``sr_app.Upscaler`` is the Python API."""

__all__ = ["Upscaler"]


def __getattr__(name: str):
    if name == "Upscaler":  # lazy: `import sr_app` stays light
        from .infer import Upscaler

        return Upscaler
    raise AttributeError(name)
