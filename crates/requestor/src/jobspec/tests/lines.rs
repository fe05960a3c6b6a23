//! Tasks that are lines: a manifest's, and a folder's file names.

use super::*;

#[test]
fn a_manifest_s_lines_are_its_tasks() {
    let folder = Folder::new();
    folder.write("tasks.txt", b"alpha\nbeta gamma\r\ndelta");
    std::fs::create_dir(folder.dir.path().join("in")).unwrap();
    for name in ["alpha", "beta gamma", "delta"] {
        folder.write(&format!("in/{name}"), name.as_bytes());
    }
    let job = folder
        .parse(&format!(
            "{HEAD}[tasks]\nmanifest = \"tasks.txt\"\nargs = [\"{{line}}\", \"{{index}}\", \"<{{line}}>\"]\n\
             stdin = \"{{line}} is literal here\"\nfiles = {{ \"word\" = \"in/{{line}}\" }}\n"
        ))
        .unwrap();
    assert_eq!(job.task_count(), 3);
    let task = job.task(1).unwrap();
    assert_eq!(args(&task), ["beta gamma", "1", "<beta gamma>"]);
    assert_eq!(*task.stdin, b"{line} is literal here");
    assert_eq!(task.files[0].cid, ContentId::of(b"beta gamma"));
    assert_eq!(
        args(&job.task(2).unwrap())[0],
        "delta",
        "no newline at the end"
    );
    assert_eq!(job.task(3), None);

    // Across blocks of lines, read at random and in order.
    let lines: Vec<String> = (0..200).map(|line| format!("line {line}")).collect();
    folder.write("many.txt", format!("{}\n", lines.join("\n")).as_bytes());
    let job = folder
        .parse(&format!(
            "{HEAD}[tasks]\nmanifest = \"many.txt\"\nargs = [\"{{line}}\"]\n"
        ))
        .unwrap();
    assert_eq!(job.task_count(), 200, "a last newline makes no task");
    assert_eq!(args(&job.task(130).unwrap()), ["line 130"]);
    let all: Vec<String> = job.tasks().map(|task| args(&task).remove(0)).collect();
    assert_eq!(all, lines);
}

#[test]
fn a_manifest_changed_after_loading_stops_the_job_and_a_replaced_one_is_not_read() {
    let folder = Folder::new();
    let path = folder.dir.path().join("tasks.txt");
    folder.write("tasks.txt", b"one\ntwo\nthree\n");
    let text = format!("{HEAD}[tasks]\nmanifest = \"tasks.txt\"\nargs = [\"{{line}}\"]\n");

    // Put in its place: the file that was read is read still.
    let job = folder.parse(&text).unwrap();
    folder.write("other.txt", b"uno\ndos\ntres\n");
    std::fs::rename(folder.dir.path().join("other.txt"), &path).unwrap();
    assert_eq!(args(&job.task(1).unwrap()), ["two"]);

    // Changed in place, to lines as long: found, not read as another task.
    let job = folder.parse(&text).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| io::Write::write_all(&mut file, b"une"))
        .unwrap();
    assert_eq!(job.task(1), None);
    let failure = job.task_failure().unwrap().to_string();
    assert!(
        failure.contains("changed after the job was loaded"),
        "{failure}"
    );
    assert!(matches!(
        job.try_task(2),
        Err(TaskError::ManifestChanged { index: 2, .. })
    ));
    assert_eq!(job.tasks().count(), 0);
}

#[test]
fn manifest_mistakes_point_at_their_place() {
    let folder = Folder::new();
    let too_long = format!("ok\n{}\n", "x".repeat(TASK_ARG_BYTES_MAX + 1));
    let cases: [(&[u8], &str); 4] = [
        (
            too_long.as_bytes(),
            "tasks.txt, line 2: above the limit of 4096 bytes",
        ),
        (
            b"a\n\nb\n",
            "tasks.txt, line 2: empty: each line is one task",
        ),
        (b"a\nb\xff\n", "tasks.txt, line 2: not UTF-8 text"),
        (b"", "has no lines"),
    ];
    for (bytes, message) in cases {
        folder.write("tasks.txt", bytes);
        let error = folder
            .parse(&format!("{HEAD}[tasks]\nmanifest = \"tasks.txt\"\n"))
            .unwrap_err();
        assert_eq!(error.location(), Some((5, 12)), "{error}");
        assert!(error.to_string().contains(message), "{error}");
    }
    // A line at the limit passes; an argument made longer by a template
    // does not.
    folder.write("tasks.txt", "x".repeat(TASK_ARG_BYTES_MAX).as_bytes());
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\nmanifest = \"tasks.txt\"\nargs = [\"-{{line}}\"]\n"),
        (6, 9),
        "argument of task 0 is 4097 bytes, above the limit of 4096",
    );
    folder.write("tasks.txt", b"a\n");
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\nmanifest = \"tasks.txt\"\nstart = 1\n"),
        (6, 9),
        "`start` is for a range: with `manifest`, each line of the file is a task",
    );
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\nend = 3\nmanifest = \"tasks.txt\"\n"),
        (5, 7),
        "`end` is for a range",
    );
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\nmanifest = \"absent.txt\"\n"),
        (5, 12),
        "failed to read manifest",
    );
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\nend = 3\nargs = [\"{{line}}\"]\n"),
        (6, 9),
        "unknown placeholder `{line}` in an argument; the only one is `{index}`",
    );
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\nmanifest = \"tasks.txt\"\nargs = [\"{{file}}\"]\n"),
        (6, 9),
        "the only ones are `{index}` and `{line}`",
    );
}

#[test]
fn a_folder_s_files_are_its_tasks_in_name_order_as_a_manifest_of_their_names_would_be() {
    let folder = Folder::new();
    std::fs::create_dir(folder.dir.path().join("frames")).unwrap();
    // Made out of order: the tasks follow the names' byte order.
    for name in ["b.raw", "a.raw", "C.raw", "a b.raw"] {
        folder.write(&format!("frames/{name}"), name.as_bytes());
    }
    let templates = "args = [\"{file}\", \"{index}\"]\nfiles = { \"frame\" = \"frames/{file}\" }\n";
    let job = folder
        .parse(&format!("{HEAD}[tasks]\ndir = \"frames\"\n{templates}"))
        .unwrap();
    assert_eq!(job.task_count(), 4);
    let names: Vec<String> = job.tasks().map(|task| args(&task).remove(0)).collect();
    assert_eq!(names, ["C.raw", "a b.raw", "a.raw", "b.raw"]);
    let task = job.task(2).unwrap();
    assert_eq!(args(&task), ["a.raw", "2"]);
    assert_eq!(task.files[0].cid, ContentId::of(b"a.raw"));

    // The same job as a manifest of those names, with `{line}`: the same
    // tasks, so the same spec.
    folder.write("names.txt", b"C.raw\na b.raw\na.raw\nb.raw\n");
    let listed = folder
        .parse(&format!(
            "{HEAD}[tasks]\nmanifest = \"names.txt\"\n{}",
            templates.replace("{file}", "{line}")
        ))
        .unwrap();
    assert_eq!(listed.spec_cid(), job.spec_cid());

    // A file added to the folder after loading changes nothing.
    folder.write("frames/d.raw", b"late");
    assert_eq!(job.tasks().count(), 4);
}

#[test]
fn folder_mistakes_point_at_their_place() {
    let folder = Folder::new();
    let dir = folder.dir.path().join("frames");
    std::fs::create_dir(&dir).unwrap();
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\ndir = \"frames\"\n"),
        (5, 7),
        "holds no files: each file is one task",
    );
    folder.write("frames/one", b"1");
    std::fs::create_dir(dir.join("nested")).unwrap();
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\ndir = \"frames\"\n"),
        (5, 7),
        "nested: not a file: a `dir` job's folder holds only its tasks' files",
    );
    std::fs::remove_dir(dir.join("nested")).unwrap();
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\ndir = \"frames\"\nargs = [\"{{line}}\"]\n"),
        (6, 9),
        "the only ones are `{index}` and `{file}`",
    );
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\ndir = \"frames\"\nend = 2\n"),
        (6, 7),
        "`end` does not go with `dir`",
    );
    check_error_in(
        &folder,
        &format!("{HEAD}[tasks]\ndir = \"missing\"\n"),
        (5, 7),
        "failed to read folder",
    );
}
