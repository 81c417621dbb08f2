; Dockyard's Windows installer, for Inno Setup 6.
;
; A template: `python -m installers build --platform windows` fills in the
; fields marked with a dollar sign and writes the result beside the installer
; it builds, then runs ISCC on it. Edit this file, not the generated copy.

[Setup]
; The uninstall entry is keyed on AppId: never change it between releases.
AppId={{${app_guid}
AppName=${app_name}
AppVersion=${version}
AppVerName=${app_name} ${version}
AppPublisher=${publisher}
VersionInfoVersion=${version}
DefaultDirName={autopf}\${app_name}
DefaultGroupName=${app_name}
DisableProgramGroupPage=yes
OutputDir=${output_dir}
OutputBaseFilename=${app_name}-${version}-setup
SetupIconFile=${icon}
UninstallDisplayIcon={app}\${gui}.exe
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
; Hyper-V, which runs the machine, needs 64-bit Windows 10 or later.
MinVersion=10.0
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
PrivilegesRequired=admin
ChangesEnvironment=yes
CloseApplications=yes

[Tasks]
Name: "path"; Description: "Add the ${cli} command to PATH"
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "${bundle_dir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\${app_name}"; Filename: "{app}\${gui}.exe"
Name: "{autodesktop}\${app_name}"; Filename: "{app}\${gui}.exe"; Tasks: desktopicon

[Registry]
Root: HKLM; Subkey: "SYSTEM\CurrentControlSet\Control\Session Manager\Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; Tasks: path; Check: PathLacks(ExpandConstant('{app}'))

[Run]
Filename: "{app}\${gui}.exe"; Description: "{cm:LaunchProgram,${app_name}}"; Flags: nowait postinstall skipifsilent

[Code]
const
  EnvKey = 'SYSTEM\CurrentControlSet\Control\Session Manager\Environment';

{ True when Dir is not yet one of the entries of the system PATH. }
function PathLacks(Dir: string): Boolean;
var
  Current: string;
begin
  if not RegQueryStringValue(HKLM, EnvKey, 'Path', Current) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Current) + ';') = 0;
end;

{ The uninstaller takes back the PATH entry the installer added. }
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Current, Entry: string;
  At: Integer;
begin
  if CurUninstallStep <> usPostUninstall then
    exit;
  if not RegQueryStringValue(HKLM, EnvKey, 'Path', Current) then
    exit;
  Entry := ';' + ExpandConstant('{app}');
  At := Pos(Uppercase(Entry), Uppercase(Current));
  if At > 0 then
  begin
    Delete(Current, At, Length(Entry));
    RegWriteExpandStringValue(HKLM, EnvKey, 'Path', Current);
  end;
end;
