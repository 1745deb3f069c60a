#!/usr/bin/env python3
"""frames.py - decodes a video into raw RGB frames sampled at FPS, for tests/gpu/gpu_bench.

    python3 tests/gpu/frames.py VIDEO [--fps 1] [--loops 1] [--max N] [-o FILE|-] [--decoder auto|ffmpeg|cv2]

Writes "MDRGB1 W H FPS\\n" and then W*H*3-byte RGB frames, one per time k / FPS: with the ffmpeg CLI
its fps filter's choice, with OpenCV the last frame whose time (index / frame rate) is <= k / FPS,
as momentd's decoder samples; the two may differ by one source frame. LOOPS > 1 plays the video
that many times in a row (a long video made of looped footage, without re-encoding it).

Decoder: the ffmpeg command line when it exists (every frame decoded, threads = cores), else
OpenCV's bundled FFmpeg (cv2.VideoCapture, every frame grabbed, the sampled ones converted). It
prints to stderr the frames decoded and its decode time, so a benchmark reading the pipe can report
the decoder's own cost. Needs only the standard library plus cv2 when there is no ffmpeg CLI.
"""
import argparse
import shutil
import subprocess
import sys
import time


def probe_ffmpeg(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height", "-of", "csv=p=0", path], capture_output=True, text=True,
                         check=True).stdout.strip().split(",")
    return int(out[0]), int(out[1])


def frames_ffmpeg(path, fps, loops, sink, limit):
    w, h = probe_ffmpeg(path)
    sink.write(b"MDRGB1 %d %d %g\n" % (w, h, fps))
    n = 0
    dec = 0.0
    for _ in range(loops):
        t0 = time.monotonic()
        # fps filter with round=down picks, for each output time, the last input frame at or before it.
        p = subprocess.Popen(["ffmpeg", "-v", "error", "-i", path, "-an", "-vf", "fps=%g:round=down" % fps,
                              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], stdout=subprocess.PIPE)
        size = w * h * 3
        while limit is None or n < limit:
            buf = p.stdout.read(size)
            if len(buf) < size:
                break
            sink.write(buf)
            n += 1
        p.stdout.close()
        p.wait()
        dec += time.monotonic() - t0
    return n, dec


def frames_cv2(path, fps, loops, sink, limit):
    import cv2
    n = 0
    dec = 0.0
    header = False
    for _ in range(loops):
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            sys.exit("frames.py: cannot open %s" % path)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        step = 1.0 / (cap.get(cv2.CAP_PROP_FPS) or 30.0)
        if not header:
            sink.write(b"MDRGB1 %d %d %g\n" % (w, h, fps))
            header = True
        k, last, t, i = 0, None, 0.0, 0
        t0 = time.monotonic()
        while limit is None or n < limit:
            if not cap.grab():
                break
            t = i * step  # constant frame rate (CAP_PROP_POS_MSEC runs a frame ahead on some builds)
            i += 1
            # every target before this frame's time is shown by the previous frame
            while last is not None and k / fps < t and (limit is None or n < limit):
                sink.write(last)
                n += 1
                k += 1
            # this frame is shown at target k when the next frame comes after it (constant rate)
            if last is None or k / fps < t + step:
                ok, img = cap.retrieve()
                if ok:
                    last = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).tobytes()
        # the targets before the end of the video
        while last is not None and k / fps < t + step and (limit is None or n < limit):
            sink.write(last)
            n += 1
            k += 1
        dec += time.monotonic() - t0
        cap.release()
    return n, dec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("video")
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--loops", type=int, default=1)
    ap.add_argument("--max", type=int, default=None)
    ap.add_argument("-o", "--out", default="-")
    ap.add_argument("--decoder", choices=("auto", "ffmpeg", "cv2"), default="auto")
    a = ap.parse_args()
    sink = sys.stdout.buffer if a.out == "-" else open(a.out, "wb")
    use_ffmpeg = a.decoder == "ffmpeg" or (a.decoder == "auto" and shutil.which("ffmpeg") and shutil.which("ffprobe"))
    n, dec = (frames_ffmpeg if use_ffmpeg else frames_cv2)(a.video, a.fps, a.loops, sink, a.max)
    sink.flush()
    print("frames.py: %d frames from %s x%d with %s in %.2f s" % (n, a.video, a.loops,
          "the ffmpeg CLI" if use_ffmpeg else "OpenCV (cv2)", dec), file=sys.stderr)


if __name__ == "__main__":
    main()
