"""Pages for people: the list of public projects and each project's demo page."""

from django.http import Http404
from django.shortcuts import render

from .. import selectors


def project_index(request):
    return render(request, "predictions/index.html", {"projects": selectors.project_list_public()})


def project_demo(request, slug):
    project = selectors.project_get_info(slug=slug)
    if project is None:
        raise Http404(f"No project named {slug!r}.")
    return render(request, "predictions/demo.html", {"project": project})
