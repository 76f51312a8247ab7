//! The benchmark's results as Markdown tables, as docs/benchmarks.md shows them.

use smoothface_device::bench;

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} ms"))
}

/// Prints the benchmark's tables in Markdown.
pub fn all(r: &bench::BenchReport) {
    let ort = r.onnxruntime.as_deref().unwrap_or("onnxruntime (not run)");
    println!("Embedding one face on one thread, tract beside {ort}:\n");
    println!("| model | graph | tract | onnxruntime | tract / onnxruntime | cosine to the first model, tract | same, onnxruntime | cosine tract vs onnxruntime |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for e in &r.embedding {
        println!(
            "| {} ({}) | {} | {:.2} ms | {} | {} | {:.5} | {} | {} |",
            e.name,
            e.model.display(),
            e.graph.label(),
            e.tract_ms,
            ms(e.onnxruntime_ms),
            e.onnxruntime_ms
                .map_or("-".into(), |o| format!("{:.2}", e.tract_ms / o)),
            e.min_cosine_to_first,
            e.min_cosine_to_first_onnxruntime
                .map_or("-".into(), |c| format!("{c:.5}")),
            e.min_cosine_tract_vs_onnxruntime
                .map_or("-".into(), |c| format!("{c:.5}")),
        );
    }
    for e in r.embedding.iter().filter(|e| e.tract_ops.is_some()) {
        println!(
            "\nOperators of {} {}, fastest run of each node summed:\n",
            e.name,
            e.graph.label()
        );
        println!("| tract op | nodes | time | onnxruntime op | nodes | time |");
        println!("|---|---:|---:|---|---:|---:|");
        let (tract, peer) = (
            e.tract_ops.as_deref().unwrap_or_default(),
            e.onnxruntime_ops.as_deref().unwrap_or_default(),
        );
        let cell = |o: Option<&smoothface_device::onnx::OpTime>| {
            o.map_or("| | |".to_string(), |o| {
                format!("{} | {} | {:.3} ms", o.op, o.nodes, o.ms)
            })
        };
        for i in 0..tract.len().max(peer.len()) {
            println!("| {} | {} |", cell(tract.get(i)), cell(peer.get(i)));
        }
    }
    println!();
    detection(&r.detection);
    println!();
    if !r.rows.is_empty() {
        rows(&r.rows);
        println!();
    }
    end_to_end(&r.end_to_end);
    println!();
    search(&r.search);
}

/// The end-to-end table in Markdown.
pub fn end_to_end(e: &bench::EndToEnd) {
    let peer = e
        .reference
        .as_deref()
        .unwrap_or("the reference pipeline (not run)");
    println!("Index end to end, {} photos, beside {peer}:\n", e.photos);
    println!("| `smoothface index`, {} threads | reference | ours / reference | faces: ours / reference |", e.threads);
    println!("|---:|---:|---:|---:|");
    println!(
        "| {:.1} photos/s | {} | {} | {} / {} |",
        e.photos_per_second,
        e.reference_photos_per_second
            .map_or("-".into(), |p| format!("{p:.1} photos/s")),
        e.reference_photos_per_second
            .map_or("-".into(), |p| format!("{:.2}x", e.photos_per_second / p)),
        e.faces,
        e.reference_faces.map_or("-".into(), |f| f.to_string()),
    );
}

/// The detection tables in Markdown: each detector beside its peer and its sides, then, with a
/// second detector, how the two agree and both at each side on the group photos.
pub fn detection(r: &bench::detect::DetectReport) {
    for report in std::iter::once(r).chain(r.compared.as_deref()) {
        detect_rows(report);
        if let Some(sweep) = &report.sides {
            sides(&report.detector, sweep);
        }
        println!();
    }
    if let (Some(other), false) = (&r.compared, r.agreement.is_empty()) {
        agreement([&r.detector, &other.detector], &r.agreement);
    }
    if let Some(both) = &r.side_by_side {
        side_by_side(both);
    }
}

/// One detector's timing beside its peer.
fn detect_rows(r: &bench::detect::DetectReport) {
    let peer = r.reference.as_deref().unwrap_or("its peer (not run)");
    println!(
        "{}: decode + detect, one photo at a time on one thread, beside {peer} on the same files:\n",
        r.detector
    );
    let Some(first) = r.rows.first() else {
        return;
    };
    let parts: Vec<&str> = first.ours_stages.named().iter().map(|p| p.0).collect();
    let peer_detect = r.rows.iter().any(|d| d.reference_detect_ms.is_some());
    println!(
        "| photos | ours | reference |{} ours / reference | our decode | {} | faces: ours / reference | reference's found by ours | ours found by reference |",
        if peer_detect { " reference's detect alone |" } else { "" },
        parts.join(" | ")
    );
    println!(
        "|---|---:|---:|{}---:|---:|{}---:|---:|---:|",
        if peer_detect { "---:|" } else { "" },
        "---:|".repeat(parts.len())
    );
    let share = |s: Option<f64>| s.map_or("-".into(), |s| format!("{:.1}%", 100.0 * s));
    for d in &r.rows {
        let size = match d.size {
            bench::detect::PhotoSize::AsTaken => {
                format!("{} as taken ({}x{})", d.photos, d.width, d.height)
            }
            bench::detect::PhotoSize::Scaled { width, height } => {
                format!("{} at {width}x{height}", d.photos)
            }
        };
        let stages: Vec<String> = d
            .ours_stages
            .named()
            .iter()
            .map(|p| format!("{:.1}", p.1))
            .collect();
        println!(
            "| {size} | {:.1} ms | {} |{} {} | {:.1} | {} | {} / {} | {} | {} |",
            d.ours_ms,
            ms(d.reference_ms),
            if peer_detect {
                format!(" {} |", ms(d.reference_detect_ms))
            } else {
                String::new()
            },
            d.reference_ms
                .map_or("-".into(), |p| format!("{:.2}", d.ours_ms / p)),
            d.ours_decode_ms,
            stages.join(" | "),
            d.ours_faces,
            d.reference_faces.map_or("-".into(), |f| f.to_string()),
            share(d.reference_found_by_ours),
            share(d.ours_found_by_reference),
        );
    }
}

/// The detection side table in Markdown.
fn sides(detector: &str, sweep: &bench::detect::SideSweep) {
    let (w, h) = bench::detect::GROUP_FRAME;
    println!(
        "\n{detector}, {} group photos ({w}x{h}, tiles of benchmark photos): of the faces found at full size, the share each --detect-side finds too, and decode + detect a photo:\n",
        sweep.photos
    );
    let sides: Vec<String> = sweep.sides.iter().map(|s| format!("side {s}")).collect();
    println!(
        "| face width at full size | faces | {} |",
        sides.join(" | ")
    );
    println!("|---|---:|{}", "---:|".repeat(sides.len()));
    for r in &sweep.rows {
        let found: Vec<String> = r.found.iter().map(|&f| percent(f, r.full_faces)).collect();
        println!(
            "| {} | {} | {} |",
            width_range(r.from_px, r.below_px),
            r.full_faces,
            found.join(" | ")
        );
    }
    let times: Vec<String> = sweep.side_ms.iter().map(|t| format!("{t:.0} ms")).collect();
    println!(
        "| decode + detect, a photo | {:.0} ms at full size | {} |",
        sweep.full_ms,
        times.join(" | ")
    );
}

/// `found` of `of` as a percentage.
fn percent(found: usize, of: usize) -> String {
    format!("{:.1}%", 100.0 * found as f64 / of.max(1) as f64)
}

/// A row's face widths, as the side tables head them.
fn width_range(from_px: u32, below_px: Option<u32>) -> String {
    match below_px {
        Some(b) => format!("{from_px}-{} px", b - 1),
        None => format!("{from_px} px and more"),
    }
}

/// Two detectors on the same photos: faces, landmark distances, scores at equal shares.
fn agreement([first, second]: [&str; 2], rows: &[bench::detect::Agreement]) {
    println!("{first} and {second} on the same photos: the faces both find (boxes overlapping by IoU 0.5) and the distance between their landmarks there, in inter-ocular distances (mean over the five points; then each point's mean):\n");
    println!("| photos | faces: {first} / {second} | both | mean | median | 95th percentile | left eye | right eye | nose | left mouth | right mouth |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for a in rows {
        let lm = a
            .landmarks
            .as_ref()
            .map_or("- | - | - | - | - | - | - | -".into(), |l| {
                let points: Vec<String> = l.points.iter().map(|p| format!("{p:.3}")).collect();
                format!(
                    "{:.3} | {:.3} | {:.3} | {}",
                    l.mean,
                    l.median,
                    l.p95,
                    points.join(" | ")
                )
            });
        println!(
            "| {} | {} / {} | {} | {lm} |",
            a.photos, a.faces[0], a.faces[1], a.matched
        );
    }
    let Some(shares) = rows.iter().find(|a| !a.score_at_share.is_empty()) else {
        return;
    };
    println!("\nOn the faces both find, the score each detector must be given to keep a share of them ({first} / {second}):\n");
    let heads: Vec<String> = shares
        .score_at_share
        .iter()
        .map(|s| format!("{}%", 100.0 * s.share))
        .collect();
    println!("| photos | {} |", heads.join(" | "));
    println!("|---|{}", "---:|".repeat(heads.len()));
    for a in rows.iter().filter(|a| !a.score_at_share.is_empty()) {
        let cells: Vec<String> = a
            .score_at_share
            .iter()
            .map(|s| format!("{:.3} / {:.3}", s.score[0], s.score[1]))
            .collect();
        println!("| {} | {} |", a.photos, cells.join(" | "));
    }
    for a in rows {
        if let Some(g) = &a.grouping {
            println!(
                "\n{}: the grouping's default minimum score {} keeps {:.1}% of the faces both find by {first}'s scores; {second}'s score that keeps as many: {:.3}",
                a.photos,
                g.first,
                100.0 * g.share,
                g.second
            );
        }
    }
}

/// Both detectors at each side on the group photos.
fn side_by_side(b: &bench::detect::SideBySide) {
    let [first, second] = &b.detectors;
    println!(
        "\n{first} and {second} on {} group photos: of the faces either finds at full size, the share each finds at full size and at each --detect-side, and decode + detect a photo:\n",
        b.photos
    );
    let heads: Vec<String> = b
        .detectors
        .iter()
        .flat_map(|d| {
            std::iter::once(format!("{d} full size"))
                .chain(b.sides.iter().map(move |s| format!("{d} {s}")))
        })
        .collect();
    println!(
        "| face width at full size | faces | {} |",
        heads.join(" | ")
    );
    println!("|---|---:|{}", "---:|".repeat(heads.len()));
    for r in &b.rows {
        let cells: Vec<String> = (0..2)
            .flat_map(|k| {
                std::iter::once(percent(r.found_full[k], r.faces))
                    .chain(r.found[k].iter().map(|&f| percent(f, r.faces)))
            })
            .collect();
        println!(
            "| {} | {} | {} |",
            width_range(r.from_px, r.below_px),
            r.faces,
            cells.join(" | ")
        );
    }
    let times: Vec<String> = (0..2)
        .flat_map(|k| {
            std::iter::once(format!("{:.0} ms", b.full_ms[k]))
                .chain(b.side_ms[k].iter().map(|t| format!("{t:.0} ms")))
        })
        .collect();
    println!("| decode + detect, a photo | | {} |\n", times.join(" | "));
    agreement([first, second], std::slice::from_ref(&b.agreement));
}

/// The search table in Markdown.
pub fn search(r: &bench::search::SearchReport) {
    println!(
        "Search, one query at a time, top 10, {} threads; {} real faces of {} people, the rest synthetic; {} queries (median); {}:\n",
        r.threads,
        r.real_faces,
        r.people,
        r.queries,
        r.peers.as_deref().unwrap_or("peers not run")
    );
    println!("| faces | exact, ours | faiss IndexFlatIP | faiss, 1 thread | numpy | ours / faiss's best | faiss's top 10 = ours | compact, ours | compact recall@10 | compact / faiss's best | memory a face: codes + float32 | codes built in |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.rows {
        let best = row
            .faiss_ms
            .zip(row.faiss_one_thread_ms)
            .map(|(a, b)| a.min(b));
        let ratio = |ours: f64| best.map_or("-".into(), |f| format!("{:.2}", ours / f));
        println!(
            "| {} | {:.2} ms | {} | {} | {} | {} | {} | {:.2} ms | {:.4} | {} | {} + {} B | {:.0} ms |",
            row.faces,
            row.exact_ms,
            ms(row.faiss_ms),
            ms(row.faiss_one_thread_ms),
            ms(row.numpy_ms),
            ratio(row.exact_ms),
            row.faiss_agreement
                .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            row.compact_ms,
            row.compact_recall_at_10,
            ratio(row.compact_ms),
            row.compact_bytes_per_face,
            row.float_bytes_per_face,
            row.compact_build_ms,
        );
    }
    println!(
        "\nCosine of random pairs: real faces {:.3} ± {:.3}, synthetic {:.3} ± {:.3}.",
        r.real_pairs.mean, r.real_pairs.sd, r.synthetic_pairs.mean, r.synthetic_pairs.sd
    );
}

pub fn rows(rows: &[bench::Row]) {
    println!("| what | smoothface | peer | peer time |");
    println!("|---|---:|---|---:|");
    for row in rows {
        println!(
            "| {} | {:.2} ms | {} | {} |",
            row.what,
            row.ours_ms,
            row.peer.as_deref().unwrap_or("-"),
            ms(row.peer_ms)
        );
    }
}
