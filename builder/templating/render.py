"""Rendering a template set with one sandboxed Jinja2 environment.

Template names seen by Jinja:

- ``macros.j2``, ``common/x.j2``: a relative path, the topmost layer's file;
- ``@<layer>/<path>``: that layer's file (the links of an image's chain);
- ``override:<n>``: the n-th ``--template-override`` file.

``parent_template`` in the render context is a marker naming the image being
rendered; :meth:`KilnEnvironment.join_path` turns it into the template below
the one that extends it, in that image's chain (layers bottom first, then the
override files in order). So a ``{% extends parent_template %}`` always
reaches the next template down, each file compiles once for the whole run,
and ``{{ super() }}`` works across any number of layers and override files.
"""

from __future__ import annotations

import gc
import hashlib
import marshal
import pickle
import types
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.bccache import Bucket, bc_magic
from jinja2.sandbox import SandboxedEnvironment

from builder.errors import KilnError, TemplateError
from builder.naming import ImageNaming
from builder.settings import TemplateSettings
from builder.templating.api import KILN_API, TemplateAPI
from builder.templating.layers import (
    ImageDef,
    NotRegularFile,
    TemplateSet,
    is_template_file,
    read_regular,
)

PARENT_MARKER = "kiln-parent:"
OVERRIDE_PREFIX = "override:"


def _bytecode_cache(directory: Path | None, syntax: Mapping[str, bool]
                    ) -> jinja2.BytecodeCache | None:
    """A persistent cache of compiled templates, or None when disabled.

    Jinja checks each entry against the template source's checksum; the
    directory name carries the lexer options, which the checksum does not.
    """
    if directory is None:
        return None
    key = hashlib.sha256(repr(sorted(syntax.items())).encode()).hexdigest()[:12]
    target = directory / f"jinja-{jinja2.__version__}-{key}"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache only costs speed
    return _BytecodeCache(str(target))


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's file system cache (same files), loading an entry in one read.

    ``marshal.load`` on a file object reads it a few bytes at a time and was
    the largest single cost of a warm run; one read and ``marshal.loads`` is
    about five times faster. An entry whose header (Jinja's magic, then the pickled source
    checksum) is not exactly what Jinja would write for this source is ignored,
    so the template is compiled again and the entry rewritten.
    """

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            data = _read_file(self._get_cache_filename(bucket))
        except OSError:
            return  # absent or unreadable: compile, as with no entry
        header = bc_magic + pickle.dumps(bucket.checksum, 2)
        if not data.startswith(header):
            return
        try:
            code = marshal.loads(memoryview(data)[len(header):])
        except (EOFError, ValueError, TypeError):
            return
        if isinstance(code, types.CodeType):
            bucket.code = code


@dataclass(frozen=True)
class RenderedImage:
    name: str
    dockerfile: str
    # the template files used, bottom first (layers, variants, overrides)
    templates: tuple[Path, ...]
    # build context: path inside the image directory -> source file
    context_files: Mapping[str, Path]
    # the template set's layer roots: a context file (or the link it is) must
    # stay inside the one holding it
    layer_roots: tuple[Path, ...] = ()
    # directories of the context made even when empty (e.g. Kolla's patches/)
    context_dirs: tuple[str, ...] = ()
    # where the context goes, relative to the work dir ("" is the image's name)
    context_path: str = ""
    # context files that are copies of its templates (Kolla's work dir has
    # them): not counted in fingerprints, the rendered Dockerfile is
    template_copies: tuple[str, ...] = ()

    @property
    def context_relpath(self) -> str:
        return self.context_path or self.name


@dataclass(frozen=True)
class UnusedBlock:
    path: Path
    block: str


def _read_file(path: str) -> bytes:
    """A whole regular file, with plain system calls (the io stack costs more
    than reading a template or a cache entry, and there is one of each per
    image); a FIFO or device is refused (:class:`NotRegularFile`), never
    waited on nor read without end."""
    return read_regular(path)[0]


def _always() -> bool:
    return True


class _LayeredLoader(jinja2.BaseLoader):
    def __init__(self, templates: TemplateSet, overrides: Sequence[Path]):
        self._templates = templates
        self._roots = [str(layer.root) for layer in templates.layers]
        self._overrides = [str(path) for path in overrides]

    def filename(self, name: str) -> str | None:
        if name.startswith("@"):
            layer, _, relpath = name[1:].partition("/")
            return f"{self._roots[int(layer)]}/{relpath}"
        if name.startswith(OVERRIDE_PREFIX):
            return self._overrides[int(name[len(OVERRIDE_PREFIX):])]
        relpath = name.lstrip("/")
        layer = self._templates.topmost(relpath)
        return None if layer is None else f"{self._roots[layer]}/{relpath}"

    def get_source(self, environment, template):
        filename = self.filename(template)
        if filename is None:
            raise jinja2.TemplateNotFound(template)
        try:
            text = _read_file(filename).decode("utf-8")
        except NotRegularFile as exc:
            raise TemplateError(f"cannot read template: it is {exc.kind}, "
                                f"not a regular file", path=filename) from exc
        except OSError as exc:
            raise TemplateError(f"cannot read template: {exc.strerror or exc}",
                                path=filename) from exc
        except UnicodeDecodeError as exc:
            raise TemplateError(f"cannot read template: it is not UTF-8 text "
                                f"(byte 0x{exc.object[exc.start]:02x} at offset "
                                f"{exc.start})", path=filename) from exc
        if "\r" in text:  # as text mode reads it: universal newlines
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text, filename, _always


class KilnEnvironment(SandboxedEnvironment):
    """The sandboxed environment of a run; resolves ``parent_template``."""

    def __init__(self, chains: Mapping[str, tuple[str, ...]], **options):
        super().__init__(**options)
        self.chains = chains

    def join_path(self, template, parent):
        if not (isinstance(template, str) and template.startswith(PARENT_MARKER)):
            return template
        image = template[len(PARENT_MARKER):]
        chain = self.chains[image]
        position = chain.index(parent) if parent in chain else -1
        if position <= 0:
            raise jinja2.TemplateRuntimeError(
                "{% extends parent_template %} but there is no template below "
                f"this one for image {image!r}")
        return chain[position - 1]


def _image_ref_function(templates: TemplateSet, naming: ImageNaming
                        ) -> Callable[[str], str]:
    images = templates.images

    def image_ref(name: str) -> str:
        if name not in images:
            raise TemplateError(f"image_ref({name!r}): the template set has "
                                f"no image named {name!r}")
        return naming.ref(name)

    return image_ref


class Renderer:
    """Renders the images of one template set; one instance per run."""

    def __init__(self, templates: TemplateSet, naming: ImageNaming,
                 settings: TemplateSettings, api: TemplateAPI = KILN_API):
        self._templates = templates
        self._naming = naming
        self._overrides = tuple(settings.overrides)
        override_names = tuple(f"{OVERRIDE_PREFIX}{i}"
                               for i in range(len(self._overrides)))
        if api.overrides_first_on_top:
            override_names = override_names[::-1]
        self._loader = _LayeredLoader(templates, self._overrides)
        chains = {name: image.chain + override_names
                  for name, image in templates.images.items()}
        self._env = KilnEnvironment(
            chains,
            loader=self._loader,
            undefined=api.undefined or (jinja2.StrictUndefined if settings.strict_undefined
                                        else jinja2.Undefined),
            auto_reload=False,
            cache_size=-1,
            bytecode_cache=_bytecode_cache(settings.cache_dir, api.syntax),
            **api.syntax,
        )
        self._env.filters.update(api.filters)
        # not a bound method: the environment must not reference the
        # Renderer, which would make it a cycle (see render_all)
        self._env.globals["image_ref"] = _image_ref_function(templates, naming)
        self._env.globals.update(api.globals)
        self._image_variables = api.image_variables
        self._postprocess = api.postprocess
        self._context_additions = api.context_additions
        self._layout = api.layout
        self._base_context = {
            **settings.variables,
            "namespace": naming.namespace,
            "image_prefix": naming.prefix,
            "tag": naming.tag,
            "registry": naming.registry,
            "env": dict(settings.environment),
            "ca_bundle": settings.ca_bundle,
            **api.variables,
        }
        self._layer_of = {str(o): "template override" for o in self._overrides}
        self._layer_of.update({str(layer.root): layer.describe()
                               for layer in templates.layers})
        # block names found in the non-override templates of rendered images
        self._base_blocks: set[str] = set()
        self._paths: dict[str, Path] = {}  # shared template name -> file
        self._layer_roots = tuple(layer.root for layer in templates.layers)

    def render(self, image: ImageDef) -> RenderedImage:
        chain = self._env.chains[image.name]
        context = {**self._base_context, "image_name": image.name,
                   "parent_template": PARENT_MARKER + image.name}
        if self._image_variables is not None:
            context.update(self._image_variables(image.name))
        try:
            template = self._env.get_template(chain[-1])
            ctx = template.new_context(context)
            try:
                text = "".join(template.root_render_func(ctx))
            except Exception:
                self._env.handle_exception()
        except jinja2.TemplateSyntaxError as exc:
            raise self._syntax_error(exc, image) from None
        except Exception as exc:  # anything a template does wrong
            raise self._runtime_error(exc, image) from exc
        self._note_blocks(ctx.blocks)
        del ctx, template
        self._discard_own_templates(chain)
        if self._postprocess is not None:
            text = self._postprocess(image.name, text)
        layout = self._layout
        files = self._templates.context_files(image, templates=layout.copies_templates)
        copies = tuple(sorted(p for p in files if "/" not in p and is_template_file(p))
                       ) if layout.copies_templates else ()
        dirs: tuple[str, ...] = ()
        if self._context_additions is not None:
            additions = self._context_additions(image.name)
            files.update(additions.files)
            dirs = additions.dirs
        return RenderedImage(
            name=image.name,
            dockerfile=text,
            templates=tuple(self._template_path(n) for n in chain),
            context_files=files,
            layer_roots=self._layer_roots,
            context_dirs=dirs,
            context_path=layout.context_path(image.name, image.directory),
            template_copies=copies,
        )

    def _template_path(self, name: str) -> Path:
        path = self._paths.get(name)
        if path is None:
            path = Path(self._loader.filename(name))
            if not name.startswith("@"):  # shared: macros, override files
                self._paths[name] = path
        return path

    def _discard_own_templates(self, chain: Iterable[str]) -> None:
        """Drop an image's own compiled templates once it is rendered.

        The ``@<layer>/...`` links of an image's chain are that image's alone,
        so keeping them would only grow the heap with every image (and each
        later pass of the garbage collector over it); shared templates (macros,
        override files) stay cached for the whole run. A compiled template is
        a reference cycle (its functions' globals hold them), so its namespace
        is cleared here, as Python does for a discarded module, and its memory
        is reused for the next image rather than waiting for a collection. A
        discarded template asked for again is simply loaded again.
        """
        cache = self._env.cache
        if cache is None:
            return
        loader = weakref.ref(self._loader)  # Jinja's cache key: (loader ref, name)
        for name in chain:
            if name.startswith("@"):
                template = cache.pop((loader, name), None)
                if template is not None:
                    _release(template)

    def render_all(self, names: Iterable[str] | None = None
                   ) -> dict[str, RenderedImage]:
        images = self._templates.images
        selected = sorted(images) if names is None else sorted(names)
        # No cyclic GC while rendering: it keeps large sets linear (benchmarks/render.py).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return {name: self.render(images[name]) for name in selected}
        finally:
            if collecting:
                gc.enable()

    def unused_override_blocks(self) -> list[UnusedBlock]:
        """Blocks an override file defines that no rendered image has."""
        unused = []
        for i, path in enumerate(self._overrides):
            template = self._env.get_template(f"{OVERRIDE_PREFIX}{i}")
            unused.extend(UnusedBlock(path, block)
                          for block in sorted(template.blocks)
                          if block not in self._base_blocks)
        return unused

    def _note_blocks(self, blocks: Mapping[str, list[Callable]]) -> None:
        override_functions = self._override_block_functions()
        for name, functions in blocks.items():
            if name not in self._base_blocks and any(
                    f not in override_functions for f in functions):
                self._base_blocks.add(name)

    def _override_block_functions(self) -> set[Callable]:
        cached = getattr(self, "_override_functions", None)
        if cached is None:
            cached = {function
                      for i in range(len(self._overrides))
                      for function in self._env.get_template(
                          f"{OVERRIDE_PREFIX}{i}").blocks.values()}
            self._override_functions = cached
        return cached

    def _where(self, filename: str | None) -> str:
        if not filename:
            return ""
        for root, label in self._layer_of.items():
            if filename == root or filename.startswith(root.rstrip("/") + "/"):
                return label
        return ""

    def _syntax_error(self, exc: jinja2.TemplateSyntaxError,
                      image: ImageDef) -> TemplateError:
        return TemplateError(f"template syntax error: {exc.message}",
                             path=exc.filename, line=exc.lineno,
                             hint=self._hint(exc.filename, image))

    def _runtime_error(self, exc: Exception, image: ImageDef) -> TemplateError:
        path, line = _template_frame(exc, self._loader_files())
        if isinstance(exc, KilnError) and exc.path is not None:
            path, line = exc.path, exc.line  # a file that could not be read
        if isinstance(exc, jinja2.TemplateNotFound):
            message = f"template {exc.name!r} not found in any layer"
        elif isinstance(exc, jinja2.UndefinedError):
            message = f"undefined variable: {exc.message}"
        elif isinstance(exc, KilnError):
            message = exc.message
        else:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return TemplateError(message, path=path, line=line,
                             hint=self._hint(path, image))

    def _hint(self, filename: str | None, image: ImageDef) -> str:
        where = self._where(filename)
        rendering = f"rendering image {image.name!r}"
        return f"{where}, {rendering}" if where else rendering

    def _loader_files(self) -> tuple[str, ...]:
        return tuple(self._layer_of)


def _release(template: jinja2.Template) -> None:
    """Break a discarded template's reference cycle (see _discard_own_templates)."""
    namespace = getattr(template.root_render_func, "__globals__", None)
    if namespace is not None and namespace.get("__jinja_template__") is template:
        namespace.clear()


def _template_frame(exc: BaseException, roots: Sequence[str]
                    ) -> tuple[str | None, int | None]:
    """The innermost traceback frame that is a template file (Jinja rewrites them)."""
    found: tuple[str | None, int | None] = (None, None)
    tb = exc.__traceback__
    prefixes = tuple(r.rstrip("/") + "/" for r in roots)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in roots or filename.startswith(prefixes):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
