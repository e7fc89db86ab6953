"""The Jinja environment every template runs in: ImmutableSandboxedEnvironment, bounded.

Jinja's sandbox refuses unsafe attributes (`__class__`, ...) and mutation of the
context. On top of it, everything a template does that can take time or memory
goes through a check made before the work (see checks.py and filters.py):

- attribute and item lookups, calls, operators, filters and tests pay a step;
- the compiled code is changed so that loops pay per item, `~` and captured
  blocks (`{% set %}`, `{% filter %}`, macros) measure their parts before joining
  them, slices and list literals are measured, and comparisons pay for their
  operands (`==` and `in` walk whole values);
- builtin methods are a closed list with their arguments checked, str.format
  and `%` check their widths, macros nest at most MAX_CALL_DEPTH deep;
- `{% include %}`, `{% import %}`, `{% extends %}` and `{% block %}` are refused
  (no loader; nothing but the context is reachable), and Jinja's compile-time
  constant folding is off (it would run filters outside any budget);
- a template of more than MAX_TOKENS tokens is refused before Jinja parses it
  (compiling is the first render's cost too).
"""

from __future__ import annotations

from sys import getsizeof
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import LoopContext, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape

try:
    from markupsafe import _escape_inner  # markupsafe >= 2.1: the C escaping of a str
except ImportError:  # pragma: no cover - older markupsafe

    def _escape_inner(text: str) -> str:
        return str(escape(text))


from templates_app.checks import (
    check_binop,
    check_join,
    check_method,
    check_str_format,
    refuse,
)
from templates_app.filters import bounded_filters, bounded_tests
from templates_app.limits import (
    CHECK_EVERY,
    MAX_CALL_ARGS,
    MAX_CALL_DEPTH,
    MAX_ITEMS,
    MAX_LOOP_STEPS,
    MAX_OUTPUT_CHARS,
    MAX_PIECES,
    MAX_RENDER_BYTES,
    MAX_TOKENS,
    MAX_VALUE_BYTES,
    THREAD,
    charge,
    current,
    guarded,
    made,
    mem_size,
    operand,
    raise_too_much_memory,
    text_size,
)

_CONTAINERS = (list, tuple, dict)
_CALL_KWARGS = frozenset({"_loop_vars", "_block_vars"})  # what Jinja's generated code adds to calls


class _LenientUndefined(Undefined):
    """A missing variable renders as an empty string (producers omit optional data)."""

    def __str__(self) -> str:
        return ""


# Checks the generated code calls directly: `environment.<check>(value)`.
_CHECKS = frozenset({"loop_items", "literal", "made", "operand", "star_args"})


def _checked(node: nodes.Expr, check: str) -> nodes.Call:
    # Jinja allows no new node types: a call of an environment attribute marks the check,
    # and the code generator writes it as a direct call.
    attribute = nodes.EnvironmentAttribute(check, lineno=node.lineno, environment=node.environment)
    return nodes.Call(
        attribute, [node], [], None, None, lineno=node.lineno, environment=node.environment
    )


def _constant(items: list) -> bool:
    return all(isinstance(item, nodes.Const) for item in items)


class _Harden(NodeTransformer):
    """Rewrites a parsed template so the generated code calls the checks."""

    def _refuse(self, node: nodes.Node, tag: str) -> None:
        raise TemplateSyntaxError(f"{{% {tag} %}} is not available in templates.", node.lineno)

    def visit_Extends(self, node: nodes.Extends) -> None:
        self._refuse(node, "extends")

    def visit_Include(self, node: nodes.Include) -> None:
        self._refuse(node, "include")

    def visit_Import(self, node: nodes.Import) -> None:
        self._refuse(node, "import")

    def visit_FromImport(self, node: nodes.FromImport) -> None:
        self._refuse(node, "from import")

    def visit_Block(self, node: nodes.Block) -> None:
        # Without extends a block has no use, and self.<block>() joins its output unchecked.
        self._refuse(node, "block")

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = _checked(node.iter, "loop_items")
        return node

    def visit_List(self, node: nodes.List) -> nodes.Expr:
        self.generic_visit(node)
        return node if _constant(node.items) else _checked(node, "literal")

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Expr:
        self.generic_visit(node)
        return node if node.ctx != "load" or _constant(node.items) else _checked(node, "literal")

    def visit_Dict(self, node: nodes.Dict) -> nodes.Expr:
        self.generic_visit(node)
        pairs = [part for pair in node.items for part in (pair.key, pair.value)]
        return node if _constant(pairs) else _checked(node, "literal")

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Expr:
        self.generic_visit(node)
        # Jinja compiles slices to plain Python, past environment.getitem: measure the copy.
        return _checked(node, "made") if isinstance(node.arg, nodes.Slice) else node

    def visit_Call(self, node: nodes.Call) -> nodes.Call:
        return self._star_args(node)

    def visit_Filter(self, node: nodes.Filter) -> nodes.Filter:
        return self._star_args(node)

    def visit_Test(self, node: nodes.Test) -> nodes.Test:
        return self._star_args(node)

    def _star_args(self, node: nodes.Call | nodes.Filter | nodes.Test) -> nodes.Node:
        self.generic_visit(node)
        # f(*values) makes a tuple of all of them before any hook sees the call.
        if node.dyn_args is not None:
            node.dyn_args = _checked(node.dyn_args, "star_args")
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Compare:
        self.generic_visit(node)
        node.expr = _checked(node.expr, "operand")
        for op in node.ops:
            op.expr = _checked(op.expr, "operand")
        return node


class _CodeGenerator(CodeGenerator):
    # `{{ value }}` is written as one call that checks and prints: print_text / print_escaped
    # instead of str() / escape() (Jinja's finalize would add a call per value).
    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.eval_ctx.volatile:
            self.write(
                "(environment.print_escaped if context.eval_ctx.autoescape"
                " else environment.print_text)("
            )
        elif frame.eval_ctx.autoescape:
            self.write("environment.print_escaped(")
        else:
            self.write("environment.print_text(")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write(")")

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _Harden().visit(node)
        super().visit_Template(node, frame)

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        check = node.node
        if isinstance(check, nodes.EnvironmentAttribute) and check.name in _CHECKS:
            self.write(f"environment.{check.name}(")
            self.visit(node.args[0], frame)
            self.write(")")
        else:
            super().visit_Call(node, frame, forward_caller=forward_caller)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # Jinja's own choice of join, through environment.concat_parts (which measures first).
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.concat_parts({func_name}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _check_printable(value: Any) -> None:
    size = len(value) if isinstance(value, str) else text_size(value, MAX_OUTPUT_CHARS)
    if size > MAX_OUTPUT_CHARS:
        refuse(f"A printed value would be longer than {MAX_OUTPUT_CHARS} characters.")


def _printed(text: str) -> str:
    """Count a printed copy: a macro's or a {% set %} block's buffer keeps it."""
    charge(getsizeof(text))
    return text


def print_text(value: Any) -> str:
    """`{{ value }}` without escaping."""
    if type(value) is str:  # most values: printed as they are, no copy
        if len(value) > MAX_OUTPUT_CHARS:
            refuse(f"A printed value is longer than {MAX_OUTPUT_CHARS} characters.")
        return value
    if type(value) is int and value.bit_length() <= 64:  # a short copy: _printed inline
        budget = THREAD.budget
        budget.allocated += 64
        if budget.allocated > MAX_RENDER_BYTES:
            raise_too_much_memory()
        return str(value)
    _check_printable(value)
    return _printed(str(value))


def print_escaped(value: Any) -> Markup:
    """`{{ value }}` with HTML escaping (a copy, up to 6 times as long: `"` is `&#34;`)."""
    if type(value) is str:  # most values: _check_printable's check for a str, inline
        if len(value) > MAX_OUTPUT_CHARS:
            refuse(f"A printed value is longer than {MAX_OUTPUT_CHARS} characters.")
        text = Markup(_escape_inner(value))  # what escape() does for a str, one call less
        charge(getsizeof(text))
        return text
    if type(value) is int and value.bit_length() <= 64:
        budget = THREAD.budget
        budget.allocated += 64
        if budget.allocated > MAX_RENDER_BYTES:
            raise_too_much_memory()
        return escape(value)
    _check_printable(value)
    return _printed(escape(value))


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with every operation checked against the thread's budget."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, autoescape: bool):
        super().__init__(
            autoescape=autoescape,
            undefined=_LenientUndefined,
            auto_reload=False,
            cache_size=0,
            optimized=False,
        )
        self.filters = bounded_filters()
        self.tests = bounded_tests()
        self.globals = {"range": self._range}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        count = 0
        for lineno, token, _ in self.lex(source, name, filename):
            if token != "whitespace":
                count += 1
                if count > MAX_TOKENS:
                    raise TemplateSyntaxError(
                        f"The template has more than {MAX_TOKENS} tokens"
                        " (names, operators, literals, texts).",
                        lineno,
                    )
        return super()._parse(source, name, filename)

    # -- what the generated code calls (see _Harden) --------------------------------------

    @staticmethod
    def loop_items(iterable: Any) -> Any:
        return guarded(iterable, MAX_LOOP_STEPS, "A loop in the template ran over")

    @staticmethod
    def star_args(values: Any) -> Any:
        if isinstance(values, (list, tuple)) and len(values) <= MAX_CALL_ARGS:
            return values
        return list(guarded(values, MAX_CALL_ARGS, "A call in the template was given"))

    made = staticmethod(made)
    operand = staticmethod(operand)
    print_text = staticmethod(print_text)
    print_escaped = staticmethod(print_escaped)

    @staticmethod
    def literal(value: Any) -> Any:
        """A list, tuple or dict written in the template: `[x, x, x]` of a large x is as large
        as `x * 3`, and comparing or printing it walks all of it."""
        size = mem_size(value, MAX_VALUE_BYTES)
        if size > MAX_VALUE_BYTES:
            refuse(f"A list in the template would hold more than {MAX_VALUE_BYTES >> 20} MiB.")
        budget = current()
        budget.spend(1 + (size >> 10))
        budget.allocate(getsizeof(value))  # its items exist already
        return value

    @staticmethod
    def concat_parts(join: Any, parts: tuple) -> str:
        """`a ~ b ~ c`: the parts are printed and joined; measure them first."""
        total = 0
        for part in parts:
            total += len(part) if isinstance(part, str) else text_size(part, MAX_OUTPUT_CHARS)
            if total > MAX_OUTPUT_CHARS:
                refuse(f"A text joined with ~ would be longer than {MAX_OUTPUT_CHARS} characters.")
        current().spend(1 + (total >> 10))
        return made(join(parts))

    def concat(self, parts: Any) -> str:  # type: ignore[override]
        """The join of a captured block: {% set %}...{% endset %}, {% filter %}, a macro."""
        if not isinstance(parts, list):
            parts = list(parts)
        if sum(map(len, parts)) > MAX_OUTPUT_CHARS:
            refuse(f"A block of the template would be longer than {MAX_OUTPUT_CHARS} characters.")
        text = "".join(parts)
        current().allocate(getsizeof(text))
        return text

    def _range(self, *args: Any) -> range:
        if any(not isinstance(a, int) for a in args):
            refuse("range() takes whole numbers.")
        numbers = range(*args)
        try:
            count = len(numbers)
        except OverflowError:
            count = MAX_ITEMS + 1
        if count > MAX_ITEMS:
            refuse(f"range() is limited to {MAX_ITEMS} numbers in templates.")
        return numbers

    # -- Jinja's sandbox hooks ------------------------------------------------------------

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # The sandbox would hand back an Undefined that renders as ""; refuse loudly instead.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe."
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget = THREAD.budget  # budget.spend() inline: lookups are the most frequent step
        budget.steps += 1
        if budget.steps >= budget.next_check:
            budget.check_clock()
        # Contexts are plain data: a key wins over a dict method of the same
        # name, so `digest.items` is the digest's items, not dict.items.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = THREAD.budget
        budget.steps += 1
        if budget.steps >= budget.next_check:
            budget.check_clock()
        return super().getitem(obj, argument)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        current().spend()
        check_binop(operator, left, right)
        return made(self.binop_table[operator](left, right))

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        template: str = value.__self__
        is_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            current().spend(1 + (len(template) >> 10))
            if is_map:
                mapping = args[0] if args and isinstance(args[0], dict) else {}
                check_str_format(template, (), mapping)
            else:
                check_str_format(template, args, kwargs)
            return made(wrapper(*args, **kwargs))

        bounded_format.bounded_format = True  # type: ignore[attr-defined]
        return bounded_format

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: PYI063 - Jinja's signature
        budget = current()
        budget.spend()
        if isinstance(__obj, (Macro, LoopContext)):
            return __self._call_template_code(__context, __obj, args, kwargs)
        if isinstance(__obj, Undefined):
            return super().call(__context, __obj, *args, **kwargs)  # raises the undefined error
        owner = getattr(__obj, "__self__", None)
        if owner is __self or getattr(__obj, "bounded_format", False):
            pass  # range(); str.format checks itself
        elif isinstance(owner, LoopContext):
            if __obj.__name__ not in ("cycle", "changed"):
                refuse(f"loop.{__obj.__name__}() is not available in templates.")
            __self.literal(args)  # loop.changed keeps and compares them
        else:
            name = getattr(__obj, "__name__", "")
            if isinstance(owner, str) and len(owner) >= 1024:
                budget.spend(len(owner) >> 10)  # str.count, find, upper... walk all of it
            if isinstance(owner, str) and name == "join":
                items = list(guarded(args[0], MAX_PIECES, "str.join() was given")) if args else []
                check_join(owner, items)
                args = (items,)
            else:
                named = {k: v for k, v in kwargs.items() if k not in _CALL_KWARGS}
                check_method(owner, name, args, named)
        if any(isinstance(a, _CONTAINERS) for a in args):
            budget.spend(CHECK_EVERY)  # list.index(x) and the like compare x with every item
        result = super().call(__context, __obj, *args, **kwargs)
        return result if result is owner else made(result)

    def _call_template_code(
        self, context, obj: Macro | LoopContext, args: tuple, kwargs: dict
    ) -> Any:
        """A macro, `caller()` or the `loop()` of a recursive loop: nesting is limited, a
        recursive loop's items are paid for, and what a macro gathers into its `varargs`
        and `kwargs` is measured like a list written in the template."""
        if isinstance(obj, LoopContext):
            if args:
                args = (self.loop_items(args[0]), *args[1:])
        else:
            extra = args[len(obj.arguments) :]
            named = {
                k: v for k, v in kwargs.items() if k not in obj.arguments and k not in _CALL_KWARGS
            }
            if extra or named:
                self.literal((extra, named))
        budget = current()
        budget.depth += 1
        try:
            if budget.depth > MAX_CALL_DEPTH:
                refuse(f"Macros in the template nest more than {MAX_CALL_DEPTH} deep.")
            return super().call(context, obj, *args, **kwargs)  # its body's join was measured
        finally:
            budget.depth -= 1
