"""Pages for people: the gallery of public projects and each project's demo page."""

from django.http import Http404
from django.shortcuts import render
from django.templatetags.static import static

from .. import selectors, snippets
from ..inference.spec import Resize


def project_index(request):
    return render(request, "predictions/index.html", {"cards": selectors.project_gallery()})


def project_demo(request, slug):
    project = selectors.project_get_info(slug=slug)
    if project is None:
        raise Http404(f"No project named {slug!r}.")
    # This server as its callers reach it (https behind Heroku's router: SECURE_PROXY_SSL_HEADER).
    target = snippets.Target(
        server=request.build_absolute_uri("/").rstrip("/"),
        client_url=request.build_absolute_uri(static("predictions/modelserver.js")),
        slug=project.slug,
        private=not project.is_public,
        labelled=bool(project.model is None or project.model.labels),
        drawing=bool(project.model and project.model.resize == Resize.FIT_INK),
    )
    context = {"project": project, "target": target, "snippets": snippets.snippets(target)}
    return render(request, "predictions/demo.html", context)
