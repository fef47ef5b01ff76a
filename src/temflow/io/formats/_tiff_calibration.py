"""Calibrations written into TIFF files by microscope software, for :mod:`temflow.io.formats.tiff`.

In order of trust: DigitalMicrograph's private tags (65003-65011), JEOL SightX's
``TemReporter`` XML, FEI's metadata (tag 34682), OME-XML, ImageJ's ``unit`` with
the resolution tags, and resolution tags in centimetres. A resolution in inches
is a print DPI, not a pixel size. Every function reads tags already parsed by
tifffile; none touches pixels.
"""

from __future__ import annotations

import math
from typing import Any

from temflow.io.formats._common import first_number, jsonable, pixel_calibration, unit_kind
from temflow.movie import length_to_nm

__all__ = ["tiff_calibration"]


def _unit_text(unit: Any) -> str:
    text = unit.decode("utf-8", "replace") if isinstance(unit, bytes) else str(unit)
    return text.replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("micron", "µm").strip()


def tiff_calibration(tif: Any, page: Any, n_frames: int) -> dict[str, Any]:
    """Calibrations of one TIFF: ``pixel`` (nm), ``interval`` (s), ``refusal``, ``time_refusal``,
    ``pixel_notes``, ``notes``, ``instrument`` and ``metadata``.

    In order of trust: DigitalMicrograph's private tags, JEOL SightX's XML, FEI's
    metadata, OME-XML, ImageJ's ``unit`` with the resolution tags, and resolution
    tags in centimetres. A resolution in inches is a print DPI, not a pixel size.
    """
    out: dict[str, Any] = {"pixel": None, "interval": None, "refusal": None, "time_refusal": None,
                           "pixel_notes": [], "notes": [], "instrument": {}, "metadata": {}}
    meta = out["metadata"]
    tags = page.tags
    for name in ("Software", "DateTime", "Make", "Model"):
        tag = tags.get(name)
        if tag is not None and isinstance(tag.value, str) and len(tag.value) < 2000:
            meta[name] = tag.value
    if any(code in tags for code in _DM_TAGS.values()):
        meta["calibration_source"] = "DigitalMicrograph TIFF tags"
        _dm_tags(tags, n_frames, out)
        return out
    make = tags.get("Make")
    description = tags.get("ImageDescription")
    if (make is not None and str(make.value).startswith("JEOL") and description is not None
            and "TemReporter" in str(description.value)):
        meta["calibration_source"] = "JEOL SightX XML"
        _jeol_sightx(str(description.value), page, out)
        return out
    fei = getattr(tif, "fei_metadata", None)
    if fei:
        meta["calibration_source"] = "FEI TIFF metadata"
        _fei(fei, out)
        if out["pixel"] is not None:
            return out
    imagej = tif.imagej_metadata or {}
    unit = _unit_text(imagej.get("unit", "")) if imagej else ""
    if imagej:
        meta["imagej"] = {k: v for k, v in imagej.items() if isinstance(v, (str, int, float, bool))}
        if isinstance(imagej.get("finterval"), (int, float)) and imagej["finterval"] > 0:
            out["interval"] = float(imagej["finterval"])
    xres, yres = tags.get("XResolution"), tags.get("YResolution")
    resunit = tags.get("ResolutionUnit")
    resunit_value = int(resunit.value) if resunit is not None else 2
    if xres is not None and yres is not None:
        xv, yv = xres.value, yres.value
        px = xv[0] / xv[1] if isinstance(xv, tuple) and xv[1] else float(xv) if not isinstance(xv, tuple) else 0
        py = yv[0] / yv[1] if isinstance(yv, tuple) and yv[1] else float(yv) if not isinstance(yv, tuple) else 0
        if px > 0 and py > 0:
            if unit and unit.lower() not in ("pixel", "pixels", "px"):
                pixel, refusal, notes, facts = pixel_calibration((1.0 / py, unit), (1.0 / px, unit))
                out.update(pixel=pixel, refusal=refusal, pixel_notes=notes)
                out["notes"].extend(facts)
                meta["calibration_source"] = "ImageJ unit and resolution tags"
            elif resunit_value == 3:  # centimetres
                out["pixel"] = (1e7 / py, 1e7 / px)
                meta["calibration_source"] = "resolution tags (pixels per cm)"
    if getattr(tif, "is_ome", False) and tif.ome_metadata:
        ome_pixel, ome_interval = _ome_calibration(tif.ome_metadata)
        if ome_pixel:
            out["pixel"], out["refusal"], out["pixel_notes"] = ome_pixel, None, []
            meta["calibration_source"] = "OME-XML"
        out["interval"] = ome_interval or out["interval"]
        meta["ome"] = True
    return out


#: DigitalMicrograph's private TIFF tags (as DM and rosettasciio write them): scale, unit, origin per axis
_DM_TAGS = {"x_unit": 65003, "y_unit": 65004, "z_unit": 65005, "x_origin": 65006, "y_origin": 65007,
            "z_origin": 65008, "x_scale": 65009, "y_scale": 65010, "z_scale": 65011}


def _dm_tags(tags: Any, n_frames: int, out: dict[str, Any]) -> None:
    """Pixel size and frame time from DigitalMicrograph's TIFF tags (65003..65011)."""
    from temflow.movie import time_to_s

    def value(name: str) -> Any:
        tag = tags.get(_DM_TAGS[name])
        if tag is None:
            return None
        v = tag.value
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        if isinstance(v, tuple):
            v = v[0] if v else None
        return v.strip("\x00 ") if isinstance(v, str) else v

    xs, ys = first_number(value("x_scale")), first_number(value("y_scale"))
    xu, yu = _unit_text(value("x_unit") or ""), _unit_text(value("y_unit") or "")
    out["metadata"]["dm_tags"] = {k: jsonable(value(k)) for k in _DM_TAGS if value(k) is not None}
    if xs is None or ys is None:
        out["pixel_notes"].append("the DigitalMicrograph tags give no pixel scale")
    else:
        pixel, refusal, notes, facts = pixel_calibration((ys, yu), (xs, xu))
        out.update(pixel=pixel, refusal=refusal, pixel_notes=notes)
        out["notes"].extend(facts)
    zs, zu = first_number(value("z_scale")), _unit_text(value("z_unit") or "")
    if n_frames > 1 and zs is not None:
        kind = unit_kind(zu)
        if kind == "time" and zs > 0:
            out["interval"] = time_to_s(zs, zu)
        elif kind == "length":
            out["time_refusal"] = (f"the stack's third axis is calibrated as a length ({zs:g} {zu} per slice): a "
                                   "through-focus, tilt or depth series")
        elif kind != "none":
            out["notes"].append(f"the stack's third axis is in {zu!r}; no time step taken from it")


def _xml_text(root: Any, path: str) -> str | None:
    element = root.find(path)
    return element.text.strip() if element is not None and element.text else None


def _jeol_sightx(description: str, page: Any, out: dict[str, Any]) -> None:
    """JEOL SightX ``TemReporter`` XML: pixel size = 1 / (pixels per metre at the camera x magnification).

    SightX records the image's pixels per metre at the detector plane
    (``Measurement/.../DrawImageInformation/PixelsPerMeter``; the resolution tags
    hold the same figure rounded to whole dots per inch) and the magnification
    (``ImageFormingSystem/SelectorValue``). Its own measurements use exactly this
    scale. Diffraction (``ModeString`` DIFF) is reciprocal space; an image taken on
    the camera in STEM mode (``EosMode`` ASID, a Ronchigram) has no specimen scale.
    """
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(description.strip(" \r\n\t\x00\x01"))
    except ET.ParseError as exc:
        out["pixel_notes"].append(f"the JEOL SightX XML cannot be parsed ({exc})")
        return
    eos = _xml_text(root, "Eos/EosMode") or ""
    mode = _xml_text(root, "ImageFormingSystem/ModeString") or ""
    selector = first_number(_xml_text(root, "ImageFormingSystem/SelectorValue"))
    selector_unit = _xml_text(root, "ImageFormingSystem/SelectorUnitString") or ""
    voltage = first_number(_xml_text(root, "ElectronGun/AccelerationVoltage"))
    exposure_us = first_number(_xml_text(root, "JemBaumerCamera/Parameter/ExposureTimeValue"))
    instrument = out["instrument"]
    if voltage:
        instrument["voltage_kV"] = voltage / 1000.0
    if exposure_us:
        instrument["exposure_s"] = exposure_us * 1e-6
    model = _xml_text(root, "Instruments")
    if model:
        instrument["microscope"] = model
    instrument["mode"] = f"{eos} {mode}".strip()
    out["metadata"]["jeol"] = {"EosMode": eos, "ModeString": mode, "SelectorValue": selector,
                               "SelectorUnitString": selector_unit}
    ppm = None
    info = root.find("Measurement/MeasurementFormat/DrawImageInformation")
    shape = tuple(int(v) for v in page.shape[:2])
    if info is not None:
        width = first_number(_xml_text(info, "ImageSize/Width"))
        height = first_number(_xml_text(info, "ImageSize/Height"))
        horizontal = first_number(_xml_text(info, "PixelsPerMeter/Horizontal"))
        vertical = first_number(_xml_text(info, "PixelsPerMeter/Vertical"))
        if horizontal and vertical and (height, width) == shape:
            ppm = (vertical, horizontal)
    if ppm is None:
        xres, yres, unit = page.tags.get("XResolution"), page.tags.get("YResolution"), page.tags.get("ResolutionUnit")
        if xres is not None and yres is not None:
            per = 0.0254 if unit is None or int(unit.value) == 2 else 0.01
            ppm = (yres.value[0] / yres.value[1] / per, xres.value[0] / xres.value[1] / per)
    if ppm is None or not selector:
        out["pixel_notes"].append("the JEOL SightX metadata gives no pixels per metre or no magnification")
        return
    if eos == "eosASID":
        out["pixel_notes"].append(f"a JEOL SightX camera image taken in STEM mode (EosMode {eos}, e.g. a "
                                  "Ronchigram): the magnification does not give its scale")
        return
    if mode.upper().startswith("DIFF"):
        length_m = selector * {"mm": 1e-3, "cm": 1e-2, "m": 1.0}.get(selector_unit.lower(), 1e-3)
        if voltage:
            wavelength = _electron_wavelength_m(voltage)
            step = 1.0 / (ppm[1] * length_m * wavelength) * 1e-9
            detail = f"{step:.6g} 1/nm per pixel at camera length {length_m:g} m"
        else:
            detail = f"camera length {length_m:g} m"
        out["refusal"] = f"this is a diffraction pattern (reciprocal space): JEOL SightX ModeString DIFF, {detail}"
        return
    if selector_unit.upper() != "X":
        out["pixel_notes"].append(f"the JEOL SightX selector is {selector:g} {selector_unit!r}, not a magnification")
        return
    instrument["magnification"] = selector
    out["pixel"] = (1e9 / (ppm[0] * selector), 1e9 / (ppm[1] * selector))
    out["notes"].append(f"pixel size from JEOL SightX: 1 / ({ppm[1]:g} pixels per metre x magnification {selector:g})")


def _electron_wavelength_m(voltage_v: float) -> float:
    """Relativistic electron wavelength, m."""
    m_e, e, c, h = 9.1093837015e-31, 1.602176634e-19, 299792458.0, 6.62607015e-34
    momentum = 2 * m_e * e * voltage_v * (1 + e * voltage_v / (2 * m_e * c**2))
    return h / math.sqrt(momentum)


def _fei(fei: dict[str, Any], out: dict[str, Any]) -> None:
    """FEI/Thermo Fisher TIFF metadata (tag 34682): ``Scan.PixelWidth/PixelHeight`` in m."""
    scan = fei.get("Scan", {}) if isinstance(fei, dict) else {}
    width, height = first_number(scan.get("PixelWidth")), first_number(scan.get("PixelHeight"))
    if width and height and width > 0 and height > 0:
        pixel, refusal, notes, facts = pixel_calibration((height, "m"), (width, "m"))
        out.update(pixel=pixel, refusal=refusal, pixel_notes=notes)
        out["notes"].extend(facts)
    else:
        out["pixel_notes"].append("the FEI metadata gives no valid Scan PixelWidth/PixelHeight")
    beam = fei.get("Beam", {}) if isinstance(fei, dict) else {}
    voltage = first_number(beam.get("HV"))
    if voltage:
        out["instrument"]["voltage_kV"] = voltage / 1000.0


def _ome_calibration(xml: str) -> tuple[tuple[float, float] | None, float | None]:
    """Pixel size (nm) and time increment (s) from OME-XML ``Pixels`` attributes."""
    import xml.etree.ElementTree as ET

    from temflow.movie import time_to_s

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return None, None
    sizes = []
    for axis in ("Y", "X"):
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")  # OME's default unit
        sizes.append(length_to_nm(float(value), unit) if value else None)
    pixel = (sizes[0], sizes[1]) if sizes[0] and sizes[1] else None
    interval = None
    increment = pixels.get("TimeIncrement")
    if increment:
        interval = time_to_s(float(increment), pixels.get("TimeIncrementUnit", "s"))
    return pixel, interval if interval and interval > 0 else None
