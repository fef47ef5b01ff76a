"""Calibrations read from the file, or a clear refusal: one small generated file per case.

Each file is written here in its format's documented layout (tests/formats_writers.py),
with a known pixel size and time step, and opened back: the exact values must come
back, or the exact refusal (naming the file, what the calibration is and what to do).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from formats_writers import write_dm, write_dm_tiff, write_emi, write_ser, write_velox_emd

from temflow.errors import MovieFileError
from temflow.io.reader import open_movie

NY, NX = 12, 10


def frames(n: int = 5, dtype: str = "uint16") -> np.ndarray:
    t, y, x = np.meshgrid(np.arange(n), np.arange(NY), np.arange(NX), indexing="ij")
    return (t * 500 + y * 31 + x * 3 + 7).astype(dtype)


def no_warnings(call, *args, **kwargs):
    """Call and fail on any warning (pytest's filterwarnings=error does too; this names the call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call(*args, **kwargs)


# --------------------------------------------------------------------------- TIA .ser


def test_stem_ser_with_diffraction_mode_string_is_real_space(tmp_path):
    """FEI STEM mode strings end in "Diffraction"; a scanned image is real space at the header's pixel size.

    The series allocated 200 elements and wrote 5 (a stopped acquisition); TIA left
    every tag time 0, so the EMI FrameTime is the time step.
    """
    data = frames(5)
    path = write_ser(tmp_path / "Scanning Preview_1.ser", data, pixel_size_m=3.843524875e-10, times=[0] * 5,
                     total_elements=200, version=0x0210)
    write_emi(path, mode=" STEM nP SA Zoom Diffraction", magnification=1.3e6, frame_time_s=0.23593,
              dwell_time_s=1.2e-5)
    movie = no_warnings(open_movie, path, chunks=2)
    assert movie.shape == (5, NY, NX)
    np.testing.assert_array_equal(movie.values, data)
    assert movie.attrs["pixel_size_nm"] == pytest.approx([0.3843524875, 0.3843524875], rel=1e-9)
    np.testing.assert_allclose(movie.time.values, np.arange(5) * 0.23593, rtol=1e-12)
    assert movie.attrs["calibration"] == {"pixel_size": "file", "time": "file"}
    assert movie.attrs["metadata"]["total_elements"] == 200 and movie.attrs["metadata"]["valid_elements"] == 5
    notes = " ".join(movie.attrs["notes"])
    assert "scanned (STEM) image" in notes and "FrameTime, 0.23593 s" in notes


def test_tem_diffraction_ser_is_refused_with_its_reciprocal_unit(tmp_path):
    path = write_ser(tmp_path / "diffraction_1.ser", frames(3, "int32"), pixel_size_m=42464134.61, times=[9] * 3)
    write_emi(path, mode=" TEM uP SA Zoom Diffraction", magnification=1.0, camera_length_m=1.1, dwell_time_s=0.0125,
              camera="BM-Ceta")
    with pytest.raises(MovieFileError, match=r"diffraction_1\.ser.*reciprocal space\): 0\.0424641 1/nm per pixel.*"
                       r"TEM diffraction mode.*camera length 1\.1 m.*pixel_size_nm") as error:
        open_movie(path)
    assert error.value.format == "ser"


def test_ser_step_too_large_for_a_length_is_reciprocal_whatever_the_mode(tmp_path):
    path = write_ser(tmp_path / "odd_1.ser", frames(2), pixel_size_m=2.5e6)
    write_emi(path, mode=" STEM nP SA Zoom Diffraction", frame_time_s=1.0)
    with pytest.raises(MovieFileError, match=r"0\.0025 1/nm per pixel.*1 mm or more cannot be a real-space pixel"):
        open_movie(path)


def test_tem_image_ser_uses_increasing_tag_times(tmp_path):
    """A TEM camera series: tags 30 s apart (whole seconds) give the times; the exposure is not the period."""
    data = frames(4, "int32")
    path = write_ser(tmp_path / "tem_1.ser", data, pixel_size_m=5.2612e-9, times=[100, 130, 160, 190])
    write_emi(path, mode=" TEM uP SA Zoom Image", magnification=22500.0, camera_length_m=None, dwell_time_s=0.1,
              camera="BM-Ceta")
    movie = no_warnings(open_movie, path)
    np.testing.assert_allclose(movie.time.values, [0.0, 30.0, 60.0, 90.0])
    assert movie.attrs["pixel_size_nm"] == pytest.approx([5.2612, 5.2612])


def test_ser_frame_time_that_disagrees_with_the_tags_gives_way(tmp_path):
    """Tags 5 frames over 8 s (whole seconds) cannot be 0.05 s frames: the tags' period is used, with a note."""
    path = write_ser(tmp_path / "slow_1.ser", frames(5), pixel_size_m=1e-9, times=[10, 12, 14, 16, 18])
    write_emi(path, mode=" STEM nP SA Zoom Diffraction", frame_time_s=0.05)
    movie = no_warnings(open_movie, path)
    np.testing.assert_allclose(np.diff(movie.time.values), 2.0)
    assert any("does not match" in note for note in movie.attrs["notes"])


# --------------------------------------------------------------------------- DigitalMicrograph


def test_dm_spectrum_image_is_refused_naming_the_energy_axis(tmp_path):
    """An EELS spectrum image: DM axes x, y (positions) and 3 = energy in eV."""
    cube = np.arange(16 * 3 * 4, dtype="float32").reshape(16, 3, 4)  # (channels, y, x) as a DM 3-D image
    path = write_dm(tmp_path / "EELS_SI.dm4", cube, pixel_size=2.0, unit="nm", frame_interval=0.25, time_unit="eV")
    with pytest.raises(MovieFileError, match=r"EELS_SI\.dm4.*spectrum image \(4 x 3 positions.*DM dimension 3 "
                       r"\(16 channels, 0\.25 eV per channel\) is an energy axis in eV"):
        open_movie(path, pixel_size_nm=1.0, frame_interval_s=1.0)  # no override turns a spectrum into a movie


def test_dm_single_spectrum_is_refused(tmp_path):
    spectrum = np.arange(64, dtype="float32")[None]  # a (1, 64) "image": one spectrum
    path = write_dm(tmp_path / "spectrum.dm3", spectrum, version=3, pixel_size=(1.0, 0.1), unit="eV")
    with pytest.raises(MovieFileError, match=r"a single spectrum: DM dimension 1 \(64 channels, 0\.1 eV"):
        open_movie(path)


def test_dm_stack_with_a_length_frame_axis_needs_a_frame_interval(tmp_path):
    data = frames(4, "int16")
    path = write_dm(tmp_path / "focal.dm4", data, pixel_size=0.5, unit="nm", frame_interval=4.0, time_unit="µm")
    with pytest.raises(MovieFileError, match=r"focal\.dm4.*third axis is calibrated as a length \(4 µm per slice\).*"
                       r"frame_interval_s"):
        open_movie(path)
    movie = no_warnings(open_movie, path, frame_interval_s=2.0)
    np.testing.assert_allclose(movie.time.values, [0, 2, 4, 6])
    assert movie.attrs["calibration"] == {"pixel_size": "file", "time": "user"}


def test_dm_non_square_pixels_keep_both_sizes(tmp_path):
    image = frames(1, "float32")[0]
    path = write_dm(tmp_path / "aniso.dm4", image, pixel_size=(2.0, 1.0), unit="nm")
    movie = no_warnings(open_movie, path)
    assert movie.attrs["pixel_size_nm"] == pytest.approx([2.0, 1.0])
    np.testing.assert_allclose(np.diff(movie.y.values), 2.0)
    np.testing.assert_allclose(np.diff(movie.x.values), 1.0)
    assert any("not square" in note for note in movie.attrs["notes"])


def test_dm_scale_without_unit_warns_what_to_do(tmp_path):
    path = write_dm(tmp_path / "nounit.dm4", frames(1, "float32")[0], pixel_size=0.03125, unit="")
    with pytest.warns(UserWarning) as record:
        movie = open_movie(path)
    message = str(record[0].message)
    assert "nounit.dm4" in message and "scale (0.03125) but no unit" in message and "1 px = 1 nm" in message
    assert "pixel_size_nm=" in message and "--pixel-size-nm" in message and "[input]" in message
    assert movie.attrs["calibration"]["pixel_size"] == "default" and message in movie.attrs["notes"]


def test_no_pixel_warning_or_note_when_the_user_gives_the_size(tmp_path):
    path = write_dm(tmp_path / "nounit.dm4", frames(3, "float32"), pixel_size=1.0, unit="", frame_interval=0.5)
    movie = no_warnings(open_movie, path, pixel_size_nm=0.25)
    assert not any("1 px = 1 nm" in note for note in movie.attrs.get("notes", []))
    assert movie.attrs["pixel_calibrated"] is True and movie.attrs["calibration"]["pixel_size"] == "user"


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("chunks", [None, 1])
def test_dm_tagged_tiff_stack_reads_pixel_size_and_frame_time(tmp_path, chunks):
    """DigitalMicrograph's export: scales in µm (latin-1), non-square pixels, 2.5 s per frame."""
    data = frames(3, "float32")
    path = write_dm_tiff(tmp_path / "dm_stack.tif", data, pixel_size=(1.68674, 0.168674), frame_interval=2.5)
    movie = no_warnings(open_movie, path, chunks=chunks)
    np.testing.assert_array_equal(movie.values, data)
    assert movie.attrs["pixel_size_nm"] == pytest.approx([1686.74, 168.674])
    np.testing.assert_allclose(movie.time.values, [0.0, 2.5, 5.0])
    assert movie.attrs["metadata"]["calibration_source"] == "DigitalMicrograph TIFF tags"


def test_dm_tagged_tiff_single_image(tmp_path):
    image = frames(1, "int32")[0]
    path = write_dm_tiff(tmp_path / "dm.tif", image, pixel_size=(0.16867469, 0.16867469))
    movie = no_warnings(open_movie, path)
    assert movie.attrs["pixel_size_nm"] == pytest.approx([168.67469, 168.67469])


def test_dm_tagged_tiff_in_reciprocal_space_is_refused(tmp_path):
    path = write_dm_tiff(tmp_path / "dp.tif", frames(1)[0], pixel_size=(0.17443, 0.17443), unit="1/nm")
    with pytest.raises(MovieFileError, match=r"dp\.tif.*reciprocal space \(0\.17443 1/nm per pixel\)"):
        open_movie(path)


def _jeol_tiff(path, *, eos="eosTEM", mode="MAG", selector="150000", unit="X", ppm=3642, shape=(16, 16)):
    import tifffile

    xml = f"""<?xml version="1.0"?>
<TemReporter><Instruments>JEM-ARM200F</Instruments>
<ElectronGun><AccelerationVoltage>200000</AccelerationVoltage></ElectronGun>
<Eos><EosMode>{eos}</EosMode></Eos>
<ImageFormingSystem><ModeString>{mode}</ModeString><SelectorValue>{selector}</SelectorValue>
<SelectorUnitString>{unit}</SelectorUnitString></ImageFormingSystem>
<JemBaumerCamera><Parameter><ExposureTimeValue>100000</ExposureTimeValue></Parameter></JemBaumerCamera>
<Measurement><MeasurementFormat><DrawImageInformation><ImageSize><Width>{shape[1]}</Width>
<Height>{shape[0]}</Height></ImageSize><PixelsPerMeter><Horizontal>{ppm}</Horizontal><Vertical>{ppm}</Vertical>
</PixelsPerMeter></DrawImageInformation></MeasurementFormat></Measurement></TemReporter>"""
    tifffile.imwrite(path, np.full(shape, 513, "uint16"), description=xml, metadata=None,
                     resolution=(93, 93), resolutionunit="INCH", extratags=[(271, "s", 0, "JEOL Ltd.", False)])
    return path


def test_jeol_sightx_pixel_size_from_pixels_per_metre_and_magnification(tmp_path):
    """1 / (3642 px/m x 150000) = 1.8305 nm, the scale SightX's own measurements use (not the 93 dpi rounding)."""
    movie = no_warnings(open_movie, _jeol_tiff(tmp_path / "jeol.tif"))
    assert movie.attrs["pixel_size_nm"] == pytest.approx([1e9 / (3642 * 150000)] * 2, rel=1e-12)
    assert movie.attrs["instrument"]["exposure_s"] == pytest.approx(0.1)
    assert movie.attrs["instrument"]["voltage_kV"] == 200.0


def test_jeol_sightx_diffraction_is_refused(tmp_path):
    path = _jeol_tiff(tmp_path / "saed.tif", mode="DIFF", selector="400", unit="mm")
    with pytest.raises(MovieFileError, match=r"saed\.tif.*reciprocal space\): JEOL SightX ModeString DIFF, "
                       r"0\.2737\d+ 1/nm per pixel at camera length 0\.4 m"):
        open_movie(path)


def test_jeol_sightx_stem_camera_image_is_not_calibrated(tmp_path):
    path = _jeol_tiff(tmp_path / "ronchigram.tif", eos="eosASID", selector="400000")
    with pytest.warns(UserWarning, match=r"STEM mode \(EosMode eosASID.*1 px = 1 nm"):
        open_movie(path)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "jpeg"])
def test_compressed_tiff_stacks_are_read(tmp_path, compression):
    import tifffile

    data = frames(4, "uint8" if compression == "jpeg" else "uint16") % 200
    data = data.astype("uint8" if compression == "jpeg" else "uint16")
    path = tmp_path / f"{compression}.tif"
    options = {"compressionargs": {"level": 100}} if compression == "jpeg" else {}
    tifffile.imwrite(path, data, compression=compression, imagej=True, resolution=(1 / 0.0004, 1 / 0.0004),
                     metadata={"unit": "um", "finterval": 0.2, "axes": "TYX"}, **options)
    movie = no_warnings(open_movie, path, chunks=3)
    if compression == "jpeg":  # lossy: close, not equal
        assert np.abs(movie.values.astype(int) - data.astype(int)).max() <= 8
    else:
        np.testing.assert_array_equal(movie.values, data)
    assert movie.attrs["pixel_size_nm"] == pytest.approx([0.4, 0.4])
    np.testing.assert_allclose(np.diff(movie.time.values), 0.2)


def test_tiff_with_a_codec_that_is_not_installed_is_refused_at_open(tmp_path, monkeypatch):
    import tifffile

    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, frames(2), compression="lzw")

    class NoCodecs:
        def __contains__(self, key):
            return False

        def __getitem__(self, key):
            raise KeyError(key)

    monkeypatch.setattr(tifffile.TIFF, "DECOMPRESSORS", NoCodecs(), raising=False)
    with pytest.raises(MovieFileError, match=r"lzw\.tif.*compressed with LZW.*cannot decode.*imagecodecs"):
        open_movie(path, pixel_size_nm=1.0, frame_interval_s=1.0)


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "LA", "I;16-RGB"])
def test_grey_frames_saved_as_colour_png_are_grey(tmp_path, mode):
    data = frames(3, "uint8") % 251
    data = data.astype("uint8")
    for i, frame in enumerate(data):
        file = tmp_path / f"frame_{i}.png"
        if mode == "I;16-RGB":  # 16-bit RGB, which Pillow cannot write: imagecodecs can
            import imagecodecs

            grey16 = frame.astype("uint16") * 257
            file.write_bytes(imagecodecs.png_encode(np.stack([grey16] * 3, axis=-1)))
        else:
            from PIL import Image

            channels = {"RGBA": [frame, frame, frame, np.full_like(frame, 255)], "RGB": [frame] * 3,
                        "LA": [frame, np.full_like(frame, 255)]}[mode]
            Image.fromarray(np.stack(channels, axis=-1), mode=mode).save(file)
    movie = no_warnings(open_movie, tmp_path, pixel_size_nm=0.5, frame_interval_s=1.0)
    expected = data.astype("uint16") * 257 if mode == "I;16-RGB" else data
    assert movie.dtype == expected.dtype
    np.testing.assert_array_equal(movie.values, expected)
    assert any("equal channels" in note for note in movie.attrs["notes"])


def test_colour_png_is_refused_at_open(tmp_path):
    from PIL import Image

    rgb = np.zeros((NY, NX, 3), "uint8")
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    with pytest.raises(MovieFileError, match=r"red\.png.*colour image \(its red, green and blue differ\)"):
        open_movie(tmp_path / "red.png", pixel_size_nm=1.0)


def test_colour_frame_later_in_a_folder_is_named_when_read(tmp_path):
    from PIL import Image

    grey = frames(1, "uint8")[0]
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "f1.png")
    tinted = np.stack([grey, grey, grey // 2], axis=-1)
    Image.fromarray(tinted).save(tmp_path / "f2.png")
    movie = open_movie(tmp_path, pixel_size_nm=1.0, frame_interval_s=1.0)
    with pytest.raises(MovieFileError, match=r"f2\.png.*colour image"):
        movie.values


@pytest.mark.parametrize("colour", ["grey", "tinted"])
def test_rgb_tiff_stack(tmp_path, colour):
    import tifffile

    data = frames(3, "uint8")
    rgb = np.stack([data, data, data if colour == "grey" else data // 2], axis=-1)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    if colour == "tinted":
        with pytest.raises(MovieFileError, match=r"rgb\.tif.*frame 0 is a colour image"):
            open_movie(path, pixel_size_nm=1.0, frame_interval_s=1.0)
        return
    movie = no_warnings(open_movie, path, pixel_size_nm=1.0, frame_interval_s=1.0, chunks=2)
    assert movie.shape == data.shape
    np.testing.assert_array_equal(movie.values, data)


# --------------------------------------------------------------------------- Velox EMD


def test_velox_camera_stack_time_step_from_frame_time_stamps(tmp_path):
    """A Ceta stack: the per-frame microsecond stamps (0.799976 s apart) are the truth, not a scan FrameTime."""
    data = frames(3, "int16")
    stamps = [1575540226238991 + k * 799976 for k in range(3)]
    path = write_velox_emd(tmp_path / "ceta.emd", data, pixel_size_m=8.1728832e-12, detector="BM-Ceta",
                           exposure_s=0.8, frame_time_s=0.66, timestamps_us=stamps)
    movie = no_warnings(open_movie, path)
    np.testing.assert_allclose(np.diff(movie.time.values), 0.8, rtol=1e-12)  # agrees with the 0.8 s exposure
    assert movie.attrs["pixel_size_nm"] == pytest.approx([0.0081728832] * 2)
    assert movie.attrs["instrument"]["exposure_s"] == pytest.approx(0.8)
    paused = write_velox_emd(tmp_path / "paused.emd", data, detector="BM-Ceta", exposure_s=0.8,
                             timestamps_us=[0, 800000, 5800000])
    movie = no_warnings(open_movie, paused)
    np.testing.assert_allclose(movie.time.values, [0.0, 0.8, 5.8])


def test_velox_scan_frame_time_checked_against_frame_start_seconds(tmp_path):
    """5 HAADF frames started over 5 s (whole seconds) are not 0.0416 s apart, whatever Scan.FrameTime says."""
    data = frames(5)
    path = write_velox_emd(tmp_path / "si.emd", data, detector="HAADF", frame_time_s=0.0416,
                           start_seconds=[1488794276, 1488794277, 1488794278, 1488794280, 1488794281])
    movie = no_warnings(open_movie, path)
    np.testing.assert_allclose(np.diff(movie.time.values), 1.25)
    agree = write_velox_emd(tmp_path / "agree.emd", data, detector="HAADF", frame_time_s=0.288,
                            start_seconds=[1709189884] * 3 + [1709189885] * 2)
    np.testing.assert_allclose(np.diff(no_warnings(open_movie, agree).time.values), 0.288)


def test_velox_opens_the_image_not_an_element_map(tmp_path):
    data = frames(2)
    element_map = np.zeros((1, 4, 4), "float32")
    path = write_velox_emd(tmp_path / "si.emd", data, detector="HAADF", frame_time_s=0.5,
                           extra_images={"000aaa": (element_map, "SuperXG2")})
    movie = no_warnings(open_movie, path)
    np.testing.assert_array_equal(movie.values, data)
    assert any("holds 2 images; opened" in note and "HAADF" in note for note in movie.attrs["notes"])
    json.dumps(movie.attrs)


# --------------------------------------------------------------------------- MRC (Direct Electron sidecar)


def _de_movie(tmp_path, *, scan: bool):
    import mrcfile

    path = tmp_path / "20241021_00405_movie.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(frames(4))
        mrc.voxel_size = -10.0  # DE's simulator writes a negative cell: not a calibration
    lines = {"Camera Model": "DE-16", "Frames Per Second": "700", "Frame Time (nanoseconds)": "1428500",
             "Specimen Pixel Size X (nanometers)": "0.1", "Specimen Pixel Size Y (nanometers)": "0.2",
             "Scan - Enable": "Enable" if scan else "Disable", "Scan - Points": "32" if scan else "0",
             "Scan - Size X": "8", "Scan - Size Y": "4"}
    (tmp_path / "20241021_00405_info.txt").write_text("".join(f"{k:<64}= {v}\n" for k, v in lines.items()))
    return path


def test_direct_electron_movie_calibrated_by_its_sidecar(tmp_path):
    movie = no_warnings(open_movie, _de_movie(tmp_path, scan=False))
    assert movie.attrs["pixel_size_nm"] == pytest.approx([0.2, 0.1])
    np.testing.assert_allclose(np.diff(movie.time.values), 1 / 700)
    assert any("negative voxel size" in note for note in movie.attrs["notes"])


def test_direct_electron_4d_stem_scan_is_refused(tmp_path):
    with pytest.raises(MovieFileError, match=r"_movie\.mrc.*4D-STEM scan \(Scan - Enable, 8 x 4 scan, 32 points\)"):
        open_movie(_de_movie(tmp_path, scan=True), pixel_size_nm=1.0, frame_interval_s=1.0)
