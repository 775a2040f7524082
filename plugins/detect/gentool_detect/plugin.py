"""Entry point of the detect plugin: the ``detector`` model, the ``gentool detect`` verb and the
``detect`` tool (``gentool serve``'s ``POST /v1/tools/detect`` and its page panel).

No torch here: training, detection and evaluation modules are imported inside the hooks and the
command, so ``gentool --help`` and ``gentool list`` stay instant.
"""

from __future__ import annotations

from gentool import ModelSpec, NoOptions, Tool, hookimpl

from gentool_detect.configs import DetectorConfig, DetectorEvaluateOptions, DetectToolOptions

SPEC = ModelSpec("detector", "detector",
                 "Fake-image detector: small CNN over the NPR residual, calibrated (Tan et al. 2024)",
                 DetectorConfig, default_data="digits", epochs=8, batch_size=64, lr=1e-3,
                 sample_options=NoOptions, evaluate_options=DetectorEvaluateOptions,
                 next_steps="gentool detect IMAGE_OR_DIR...   |   gentool evaluate detector")


@hookimpl
def gentool_register_models(register):
    register(SPEC)


@hookimpl
def gentool_register_commands(app):
    from gentool_detect.command import register

    register(app)


def _run_detect_tool(files, options):
    from gentool_detect.tool import run

    return run(files, options)


@hookimpl
def gentool_register_tools(register):
    register(Tool("detect", "Probability that each image is generated (and a heatmap of why)",
                  run=_run_detect_tool, options=DetectToolOptions, model="detector"))


@hookimpl
def gentool_train(model, job):
    from gentool_detect.train import train

    return train(job)


@hookimpl
def gentool_sample(model, job):
    import gentool

    raise gentool.ConfigError("detector scores images, it does not generate them: use `gentool detect FILE`")


@hookimpl
def gentool_evaluate(model, job):
    from gentool_detect.evaluate import evaluate

    return evaluate(job)
