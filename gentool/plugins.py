"""Plugin discovery and the model registry.

Plugins are found through the entry-point group ``gentool``. ``GENTOOL_PLUGINS=a,b`` loads only
the named ones (an empty value loads none). A plugin that fails to import, fails pluggy's
validation, or raises while registering is set aside with its error: the other plugins keep
working and ``gentool plugins`` shows what went wrong. Each call of ``gentool_train`` /
``gentool_sample`` / ``gentool_evaluate`` is routed to the plugin that registered the model.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import traceback
import types
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from gentool import hookspecs
from gentool.api import ModelSpec
from gentool.errors import ConfigError, GentoolError, PluginError

if TYPE_CHECKING:
    import typer

    from gentool.data.spec import DatasetSpec

GROUP = "gentool"
ROUTED_HOOKS = ("gentool_train", "gentool_sample", "gentool_evaluate", "gentool_discriminate")


@dataclass
class PluginInfo:
    """One plugin as ``gentool plugins`` reports it."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    ok: bool = True
    error: str = ""
    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Registry:
    """The loaded plugins and everything they registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("gentool")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.models: dict[str, ModelSpec] = {}
        self.datasets: dict[str, "DatasetSpec"] = {}

    # -- loading ---------------------------------------------------------------------------
    def add(self, name: str, obj: Any, *, distribution: str = "", version: str = "") -> PluginInfo:
        """Register a plugin object (module) under ``name`` and collect its models and data sets."""
        info = PluginInfo(name=name, module=getattr(obj, "__name__", type(obj).__name__),
                          distribution=distribution, version=version)
        self.plugins[name] = info
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # pluggy validation errors, duplicate names
            self._fail(info, f"{type(exc).__name__}: {exc}")
            return info
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
        misspelled = self._unknown_hooks(obj)
        if misspelled:
            self._fail(info, misspelled)
            return info
        info.problems.extend(self._unmarked_hooks(obj))
        models: list[ModelSpec] = []
        datasets: list[Any] = []
        try:
            for impl in self._impls("gentool_register_models", name):
                impl.function(register=models.append)
            for impl in self._impls("gentool_register_datasets", name):
                impl.function(register=datasets.append)
        except Exception as exc:
            self._fail(info, f"raised while registering: {type(exc).__name__}: {exc}")
            return info
        for spec in models:
            if not isinstance(spec, ModelSpec):
                info.problems.append(f"registered {spec!r}, not a ModelSpec: ignored")
            elif spec.name in self.models:
                info.problems.append(
                    f"model {spec.name!r} is already provided by plugin {self.models[spec.name].plugin!r}: ignored"
                )
            else:
                self.models[spec.name] = dataclasses.replace(spec, plugin=name, plugin_version=version)
                info.models.append(spec.name)
        from_core = _builtin_dataset_names()
        for ds in datasets:
            key = getattr(ds, "name", "").lower()
            if not key or key in from_core or key in self.datasets:
                info.problems.append(f"data set {key!r} is built in or already registered: ignored")
            else:
                self.datasets[key] = ds
                info.datasets.append(key)
        return info

    def _unknown_hooks(self, obj: Any) -> str:
        """A message for hook implementations (``@gentool.hookimpl``) that match no hook, else ''.

        pytest refuses such plugins too: a misspelled hook (``gentool_sampel``) is never called,
        and the model would fail much later with a puzzling "does not implement" error.
        (``@hookimpl(specname="gentool_sample")`` on a function of another name is fine.)
        """
        known = sorted(n for n in dir(hookspecs) if n.startswith("gentool_"))
        names = sorted(c.name for c in self.pm.get_hookcallers(obj) or [] if getattr(c, "spec", None) is None)
        if not names:
            return ""
        parts = []
        for name in names:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            parts.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
        return (f"unknown hook {', '.join(parts)}: gentool would never call it; the hooks are "
                f"{', '.join(known)}")

    def _unmarked_hooks(self, obj: Any) -> list[str]:
        """Problems for functions that look like hooks but lack ``@gentool.hookimpl`` (never called):
        a hook's own name, or a near miss of one (``gentool_sampel``)."""
        known = sorted(n for n in dir(hookspecs) if n.startswith("gentool_"))
        marked = {c.name for c in self.pm.get_hookcallers(obj) or []}
        out = []
        for name in sorted(n for n in dir(obj) if n.startswith("gentool_") and _own(obj, n)):
            if hasattr(getattr(obj, name), "gentool_impl") or name in marked:
                continue
            if name in known:
                out.append(f"{name} is not marked with @gentool.hookimpl: it is never called")
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            if close:
                out.append(f"{name} looks like the hook {close[0]} but is neither that hook nor marked with "
                           "@gentool.hookimpl: it is never called")
        return out

    def _fail(self, info: PluginInfo, error: str) -> None:
        info.ok = False
        info.error = error
        plugin = self.pm.get_plugin(info.name)
        if plugin is not None:
            self.pm.unregister(plugin)
        for m in info.models:
            self.models.pop(m, None)
        info.models = []

    def _impls(self, hook: str, plugin_name: str) -> list[Any]:
        caller = getattr(self.pm.hook, hook)
        return [i for i in caller.get_hookimpls() if i.plugin_name == plugin_name]

    def load_entry_points(self, only: set[str] | None) -> None:
        """Import every plugin of the entry-point group (or only those named in ``only``)."""
        found = sorted(entry_points(group=GROUP), key=lambda e: e.name)
        for missing in sorted((only or set()) - {ep.name for ep in found}):
            self.plugins[missing] = PluginInfo(name=missing, module="", ok=False,
                                               error="named in GENTOOL_PLUGINS but not installed")
        for ep in found:
            if only is not None and ep.name not in only:
                continue
            if ep.name in self.plugins:
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else ""
            version = dist.version if dist is not None else ""
            try:
                obj = ep.load()
            except BaseException as exc:  # SyntaxError, ImportError, SystemExit in a broken plugin
                if isinstance(exc, KeyboardInterrupt):
                    raise
                last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
                where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
                info = PluginInfo(name=ep.name, module=ep.value, distribution=dist_name, version=version, ok=False,
                                  error=f"Error importing plugin {ep.name!r}: {type(exc).__name__}: {exc}{where}")
                self.plugins[ep.name] = info
                continue
            self.add(ep.name, obj, distribution=dist_name, version=version)

    # -- lookups ---------------------------------------------------------------------------
    def model(self, name: str) -> ModelSpec:
        """The spec of model ``name``, or a one-line error with the closest names."""
        if name in self.models:
            return self.models[name]
        known = sorted(self.models)
        failed = self.failed()
        note = f" (plugin {', '.join(failed)} failed to load: see `gentool plugins`)" if failed else ""
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if close:
            raise GentoolError(f"unknown model {name!r}; did you mean {' or '.join(close)}?{note}")
        if known:
            raise GentoolError(f"unknown model {name!r}; installed models: {', '.join(known)}{note}")
        raise GentoolError(f"unknown model {name!r}: no model plugin is installed{note or ' (see `gentool plugins`)'}")

    def failed(self) -> list[str]:
        """Names of the plugins that failed to load (their models are missing)."""
        return sorted(n for n, i in self.plugins.items() if not i.ok)

    def call(self, hook: str, spec: ModelSpec, *, unanswered: str | None = None, **kwargs: Any) -> Any:
        """Call a routed hook on the plugin that owns ``spec`` only (it may skip the name check).

        A hook every model needs (train, sample, evaluate) left unanswered is the plugin's bug
        (:class:`PluginError`); an optional one (``gentool_discriminate``) passes ``unanswered``,
        the user's one-line :class:`ConfigError` for a model that does not offer it.
        """
        assert hook in ROUTED_HOOKS
        others = [p for n, p in self.pm.list_name_plugin() if n != spec.plugin]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        result = caller(model=spec.name, **kwargs)
        if result is None and unanswered is not None:
            raise ConfigError(unanswered)
        if result is None:
            raise PluginError(f"plugin {spec.plugin!r} registered model {spec.name!r} but does not implement {hook}")
        return result

    def add_commands(self, app: "typer.Typer", reserved: set[str]) -> None:
        """Let each plugin add its CLI verbs; a verb name already taken is refused."""
        import typer

        for name, info in self.plugins.items():
            if not info.ok:
                continue
            for impl in self._impls("gentool_register_commands", name):
                scratch = typer.Typer()
                try:
                    impl.function(app=scratch)
                except Exception as exc:
                    info.problems.append(f"raised while adding commands: {type(exc).__name__}: {exc}")
                    continue
                for cmd in scratch.registered_commands:
                    verb = cmd.name or (cmd.callback.__name__.replace("_", "-") if cmd.callback else "")
                    if self._claim(verb, reserved, info):
                        app.registered_commands.append(cmd)
                for group in scratch.registered_groups:  # app.add_typer(sub, name="chat"): gentool chat ...
                    verb = group.name or getattr(group.typer_instance.info, "name", None) or ""
                    if self._claim(verb, reserved, info):
                        app.registered_groups.append(group)

    @staticmethod
    def _claim(verb: str, reserved: set[str], info: PluginInfo) -> bool:
        if not verb or verb in reserved:
            info.problems.append(f"command {verb!r} is already taken: ignored" if verb else "a command without a name: ignored")
            return False
        reserved.add(verb)
        info.commands.append(verb)
        return True


def _own(obj: Any, name: str) -> bool:
    """Whether ``obj.name`` is a function the plugin itself defines (not one it imported)."""
    fn = getattr(obj, name, None)
    if not callable(fn):
        return False
    home = getattr(obj, "__name__", None) if isinstance(obj, types.ModuleType) else type(obj).__module__
    return getattr(fn, "__module__", home) == home


def _builtin_dataset_names() -> set[str]:
    from gentool.data.names import BUILTIN_DATASET_NAMES

    return set(BUILTIN_DATASET_NAMES)


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loading entry-point plugins on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        reg = Registry()
        only = _only_from_env()
        reg.load_entry_points(only)
        _REGISTRY = reg
    return _REGISTRY


def set_registry(reg: Registry | None) -> None:
    """Replace the process-wide registry (tests and embedding applications)."""
    global _REGISTRY
    _REGISTRY = reg


def _only_from_env() -> set[str] | None:
    raw = os.environ.get("GENTOOL_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}

